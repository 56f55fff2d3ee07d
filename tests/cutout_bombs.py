"""Crafted cutouts that are small on the wire and huge once decoded (built here, never stored)."""
import io
import zlib

import numpy as np

FITS_BLOCK = 2880


def fits_header(width, height, bitpix=-32):
    cards = [f"{'SIMPLE':<8}= {'T':>20}", f"{'BITPIX':<8}= {bitpix:>20}", f"{'NAXIS':<8}= {2:>20}",
             f"{'NAXIS1':<8}= {width:>20}", f"{'NAXIS2':<8}= {height:>20}", "END"]
    header = "".join(card.ljust(80) for card in cards).encode("ascii")
    return header.ljust(-(-len(header) // FITS_BLOCK) * FITS_BLOCK, b" ")


def gzip_bomb(decompressed_bytes, chunk=2**20):
    """A gzipped FITS whose header is valid and whose zeros inflate to ``decompressed_bytes``;
    compressed a chunk at a time, so building it costs a few MiB."""
    side = int((decompressed_bytes // 4) ** 0.5)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(fits_header(side, side))]
    zeros = bytes(chunk)
    remaining = side * side * 4
    while remaining > 0:
        out.append(compressor.compress(zeros[:min(chunk, remaining)]))
        remaining -= chunk
    out.append(compressor.flush())
    return b"".join(out)


def tile_compressed_bomb(side=4096):
    """A plain (not gzipped) FITS whose tile-compressed image of zeros decompresses to side*side*4 bytes."""
    from astropy.io import fits

    hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((side, side), np.float32),
                                                              compression_type="GZIP_1", tile_shape=(side, 64))])
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()
