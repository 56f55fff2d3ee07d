"""Getting alerts in: packet sources (files, folders, nightly archives, Kafka), the raw-alert archive,
and the batch write of each packet's rows."""
