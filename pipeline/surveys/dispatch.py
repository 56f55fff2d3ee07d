"""Which survey a packet is from, decided per packet: the ingest step's only survey switch.

- Confluent wire format (first byte 0, then a 4-byte schema id): Rubin's alert stream.
- An Avro container whose records carry ``diaSource``: Rubin/LSST (or ELAsTiCC); one that carries
  ``candidate``: ZTF. Anything else is quarantined by the adapter it reaches (ZTF's, which says why).
"""
from pipeline.surveys import lsst, ztf
from pipeline.surveys.base import BadAlert

__all__ = ["BadAlert", "decode_packet", "parse_record"]


def decode_packet(data, lsst_schemas=None):
    """Raw bytes -> (records, schema version or None). ``lsst_schemas``: a folder of Rubin .avsc files
    or a schema registry URL, for wire-format packets. Raises BadAlert for undecodable input."""
    if isinstance(data, (bytes, bytearray)) and len(data) > 5 and data[0] == 0:
        return lsst.decode_wire(bytes(data), lsst_schemas)
    records = ztf.decode_container(data)
    version = lsst.container_version(data) if lsst.is_lsst_record(records[0]) else None
    return records, version


def parse_record(record, version=None):
    """A decoded record -> ParsedAlert, by the adapter of the survey whose layout it has."""
    if lsst.is_lsst_record(record):
        return lsst.parse_record(record, version)
    return ztf.parse_record(record)
