"""The guide's "Custom Web Servers": any server the function starts, here Python's http.server
serving a small directory. Ferry proxies requests to port 8080 inside the container once
something listens there (within startup_timeout).

    ferry serve examples/web_server.py
    curl http://web-server-custom-server-dev.localhost:7789/

Containers share this machine's network, so a @web_server function runs one container
(use @modal.concurrent to serve requests in parallel) and its port must be free.
"""

import ferry as modal

app = modal.App("web-server")


@app.function()
@modal.web_server(port=8080, startup_timeout=10)
def custom_server():
    # Start custom HTTP server on port 8080
    import functools
    import http.server
    import pathlib
    import tempfile

    site = pathlib.Path(tempfile.mkdtemp())
    (site / "index.html").write_text("<h1>Hello from a custom server on Ferry!</h1>\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.HTTPServer(("", 8080), handler)
    httpd.serve_forever()
