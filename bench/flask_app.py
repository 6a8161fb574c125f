"""The seed sample's backend design, for the benchmark: a small Flask app that does per message
what the sample's app.py does (look the session up, create it when missing, echo the body), with
an in-memory dict as the session store so it is compared with `serve` on its in-memory store.
It is served the way the sample serves it: Flask's own server (`app.run`), threaded.

python3 bench/flask_app.py PORT
"""
import sys
import threading
import time

from flask import Flask, request

app = Flask(__name__)
sessions = {}
lock = threading.Lock()


@app.route("/message", methods=["POST"])
def message():
    connection_id = request.headers.get("x-socketless-connection-id")
    if not connection_id:
        return {"error": "missing connection id"}, 400
    with lock:
        if connection_id not in sessions:
            sessions[connection_id] = {"connectionId": connection_id, "connectedAt": int(time.time() * 1000)}
    return request.get_data(), 200


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
