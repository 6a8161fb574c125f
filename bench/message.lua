-- wrk script: POST /message with the gateway's context headers and a small body.
wrk.method = "POST"
wrk.body = "hello, socketless"
wrk.headers["x-socketless-connection-id"] = "R0oXAdfD0kwCH6w="
wrk.headers["x-socketless-request-id"] = "bench"
wrk.headers["content-type"] = "text/plain"
