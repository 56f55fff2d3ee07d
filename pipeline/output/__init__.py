"""What leaves the broker: the output stream of processed alerts (Redis Streams or Kafka)."""
