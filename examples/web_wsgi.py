"""The guide's "WSGI Apps (Flask, Django)": a Flask app served by Ferry.

    ferry serve examples/web_wsgi.py

    curl http://web-wsgi-flask-endpoint-dev.localhost:7789/
    curl 'http://web-wsgi-flask-endpoint-dev.localhost:7789/hello?name=Ferry'
"""

import ferry as modal

app = modal.App("web-wsgi")
image = modal.Image.debian_slim().pip_install("flask")


@app.function(image=image)
@modal.wsgi_app()
def flask_endpoint():
    from flask import Flask, request

    flask_app = Flask(__name__)

    @flask_app.route("/")
    def home():
        return "Hello from Flask on Ferry!"

    @flask_app.route("/hello")
    def hello():
        return {"greeting": f"Hello {request.args.get('name', 'world')}!"}

    return flask_app
