"""A local stand-in for the CDS X-Match HTTP API, for tests of the real astroquery client.

It speaks the API's protocol as astroquery uses it (``GET .../tables`` for the table list, a
multipart ``POST`` with the uploaded ``cat1`` CSV) and answers like the service: every catalogue
source within ``distMaxArcsec`` of each uploaded row, as a VOTable of ``angDist``, the uploaded
columns, then the catalogue's columns. The matching is done with astropy's ``search_around_sky``,
independently of the broker's own k-d tree. The content is built by the test, not recorded.
"""
import email
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

API_PATH = "/xmatch/api/v1/sync"


class CdsStandIn:
    def __init__(self, catalog, tables=("II/328/allwise", "II/246/out")):
        self.catalog = catalog.reset_index(drop=True)
        self.tables = tables
        self.requests = []
        self.failures_left = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PATH}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def answer(self, fields, upload):
        """The VOTable bytes the service would send for this cross-match request."""
        radius = float(fields["distMaxArcsec"]) * u.arcsec
        ra1, dec1 = fields["colRA1"], fields["colDec1"]
        objects = SkyCoord(np.asarray(upload[ra1], float) * u.deg, np.asarray(upload[dec1], float) * u.deg)
        sources = SkyCoord(self.catalog["RAJ2000"].to_numpy() * u.deg, self.catalog["DEJ2000"].to_numpy() * u.deg)
        i_src, i_obj, sep, _ = objects.search_around_sky(sources, radius)  # (into sources, into objects)
        result = Table()
        result["angDist"] = sep.arcsec
        for name in upload.colnames:
            result[name] = upload[name][i_obj]
        for name in self.catalog.columns:
            result[name] = self.catalog[name].to_numpy()[i_src]
        out = io.BytesIO()
        result.write(out, format="votable")
        return out.getvalue()

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                standin.requests.append(("GET", self.path, {}))
                if self.path.startswith(f"{API_PATH}/tables"):
                    self._send(200, "\n".join(standin.tables).encode(), "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                message = email.message_from_bytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
                )
                fields, upload = {}, None
                for part in message.get_payload():
                    name = part.get_param("name", header="content-disposition")
                    if part.get_filename():
                        upload = Table.read(part.get_payload(decode=True).decode(), format="ascii.csv")
                    else:
                        fields[name] = part.get_payload(decode=True).decode()
                standin.requests.append(("POST", self.path, fields))
                if standin.failures_left > 0:
                    standin.failures_left -= 1
                    self._send(503, b"<html>Service Unavailable</html>", "text/html")
                    return
                self._send(200, standin.answer(fields, upload), "application/x-votable+xml")

        return Handler
