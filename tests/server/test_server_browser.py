"""A web page on another origin cannot drive the local server (issue 20 item 9).

Headless Chromium loads a page served from another port (another origin) that does what a
hostile page did before: ``no-cors`` ``text/plain`` POSTs to ``/_megafs/faults``,
``/_megafs/options`` and ``/cs``, and a read of ``/_megafs/mail``.  The server's fault rules and
policies stay as they were and no command of the page runs.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.browser import CHROMIUM, DRIVER, Browser
from helpers.mount import wait_for
from helpers.server import ServerProcess

PAGE = """<!doctype html><html><body data-state="loading"><script>
(async () => {
  const target = %(target)s, out = [];
  const posts = [["_megafs/faults", '{"rules":[{"where":"upload","error":-3}]}'],
                 ["_megafs/options", '{"temp_account_links":false}'],
                 ["cs?id=1", '[{"a":"up","k":"AAAAAAAAAAAAAAAAAAAAAA","ts":"AAAA"}]']];
  for (const [path, body] of posts) {
    try {
      await fetch(target + path, {method: "POST", mode: "no-cors", body: body,
                                  headers: {"Content-Type": "text/plain"}});
      out.push("sent");
    } catch (e) { out.push("failed"); }
  }
  try { out.push("read " + (await (await fetch(target + "_megafs/mail")).text())); }
  catch (e) { out.push("read blocked"); }
  document.body.dataset.results = JSON.stringify(out);
  document.body.dataset.state = "ready";
})();
</script><p id="status">page</p></body></html>"""


class _Page(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver "
                    "(scripts/test installs them)")
@pytest.mark.slow
@pytest.mark.log_ok("cross-origin request", "need the header")
def test_a_page_on_another_origin_cannot_drive_the_server(tmp_path):
    with ServerProcess(tmp_path / "data", hashcash_easiness=0) as srv:
        before = (srv.options(), srv.stats()["faults"])
        _Page.body = (PAGE % {"target": json.dumps(srv.url)}).encode()
        page = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        threading.Thread(target=page.serve_forever, daemon=True).start()
        browser = Browser(str(tmp_path))
        try:
            state, _ = browser.open("http://localhost:%d/" % page.server_address[1])
            assert state == "ready"
            results = json.loads(browser.script("return document.body.dataset.results"))
        finally:
            browser.close()
            page.shutdown()
            page.server_close()
        assert results[-1] == "read blocked"                  # no CORS grant: not readable
        assert (srv.options(), srv.stats()["faults"]) == before
        stats = srv.stats()
        assert stats["commands"].get("up", 0) == 0, stats["commands"]
        wait_for(lambda: srv.stats()["requests"].get("refused", 0) >= 3, timeout=10,
                 what="the page's three POSTs refused")
