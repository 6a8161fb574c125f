/*
 * socketless.js: a resumable WebSocket client for socketless (and API Gateway WebSocket APIs
 * deployed from cfn/websocket-api.yml), with no dependencies, for browsers and Node.
 *
 * - One 128-bit key per client (crypto.getRandomValues), kept in `storage` when given, sent as
 *   `?resume=<key>` on every connection: reconnecting within the server's resume window joins
 *   the same session, and what was pushed meanwhile is replayed in order.
 * - Reconnects with exponential backoff and full jitter.
 * - Sends an application keep-alive frame (`keepAliveData`) when nothing was sent for
 *   `keepAlive` ms, under the gateway's idle timeout. The app receives it as a message.
 * - Opens a new connection with the same key before `maxAge` (the 2-hour limit) and switches
 *   to it once it is open: the server replaces the old one (make before break); messages the
 *   old one still delivers reach the app, and it is closed 5 s later if still open.
 * - send() queues while reconnecting, up to `queueLimit` messages (false when full).
 *
 * Events (on/off): open, message (data, the WebSocket it came on), close ({code, reason}), reconnecting ({attempt, delay}).
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.Socketless = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";
  var KEY = /^[A-Za-z0-9_-]{22,128}$/;

  function newKey() {
    var b = new Uint8Array(16), s = "";
    crypto.getRandomValues(b);
    for (var i = 0; i < 16; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function Socketless(url, options) {
    var o = options || {};
    this.url = url;
    this.WebSocket = o.WebSocket || globalThis.WebSocket;
    this.protocols = o.protocols;
    this.param = o.resumeParameter || "resume";
    this.minDelay = o.minDelay || 500;
    this.maxDelay = o.maxDelay || 30000;
    this.keepAlive = o.keepAlive === undefined ? 300000 : o.keepAlive;
    this.keepAliveData = o.keepAliveData === undefined ? '{"action":"keepalive"}' : o.keepAliveData;
    this.maxAge = o.maxAge || 7080000; // 1 h 58 min
    this.queueLimit = o.queueLimit === undefined ? 1000 : o.queueLimit;
    var store = o.storage, name = o.storageKey || "socketless-resume-key";
    var key = store && store.getItem(name);
    if (!key || !KEY.test(key)) {
      key = newKey();
      if (store) store.setItem(name, key);
    }
    this.key = key;
    this.queue = [];
    this.handlers = {};
    this.attempt = 0;
    this.closed = false;
    this.socket = null;
    this._connect();
  }

  var P = Socketless.prototype;

  P.on = function (type, fn) {
    (this.handlers[type] = this.handlers[type] || []).push(fn);
    return this;
  };

  P.off = function (type, fn) {
    var list = this.handlers[type] || [];
    var i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  };

  P._emit = function (type, value, socket) {
    var list = (this.handlers[type] || []).slice();
    for (var i = 0; i < list.length; i++) list[i].call(this, value, socket);
  };

  P._open = function () {
    var sep = this.url.indexOf("?") < 0 ? "?" : "&";
    var ws = new this.WebSocket(this.url + sep + this.param + "=" + this.key, this.protocols);
    var self = this;
    ws.onmessage = function (e) {
      self._emit("message", e.data, ws);
    };
    return ws;
  };

  P._connect = function () {
    var self = this, ws = this._open();
    this.socket = ws;
    ws.onopen = function () {
      self._live(ws);
    };
    ws.onclose = function (e) {
      self._lost(ws, e);
    };
  };

  // `ws` is open: it becomes the connection, the queue goes out, the timers start.
  P._live = function (ws) {
    var self = this;
    this.socket = ws;
    this.attempt = 0;
    this.sentAt = Date.now();
    this._stop();
    if (this.keepAlive > 0) {
      this.ticker = setInterval(function () {
        if (Date.now() - self.sentAt >= self.keepAlive) self.send(self.keepAliveData);
      }, Math.max(100, this.keepAlive / 4));
    }
    this.renewer = setTimeout(function () {
      self._renew();
    }, this.maxAge);
    this._emit("open", ws);
    this._flush();
  };

  // Make before break: a second connection with the same key; the server closes the first.
  P._renew = function () {
    var self = this, old = this.socket, ws = this._open();
    this.next = ws;
    ws.onopen = function () {
      self.next = null;
      old.onclose = null;
      self._live(ws);
      ws.onclose = function (e) {
        self._lost(ws, e);
      };
      // The server closes the old one; what it still delivers meanwhile goes to the app.
      setTimeout(function () {
        old.close(1000, "replaced");
      }, 5000);
    };
    ws.onclose = function () {
      // The new one failed; the old one keeps working until its own end.
      if (self.next === ws) self.next = null;
    };
  };

  P._stop = function () {
    clearInterval(this.ticker);
    clearTimeout(this.renewer);
    clearTimeout(this.timer);
  };

  P._lost = function (ws, e) {
    if (ws !== this.socket) return;
    this._stop();
    this._emit("close", { code: e.code, reason: e.reason });
    if (this.closed) return;
    if (this.next) {
      // A renewal is under way: it takes over when it opens, else the backoff starts.
      var self = this, next = this.next;
      this.socket = next;
      next.onclose = function (ev) {
        self._lost(next, ev);
      };
      next.onopen = function () {
        self.next = null;
        self._live(next);
      };
      return;
    }
    var cap = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
    var delay = Math.floor(Math.random() * cap);
    this.attempt++;
    this._emit("reconnecting", { attempt: this.attempt, delay: delay });
    var s = this;
    this.timer = setTimeout(function () {
      if (!s.closed) s._connect();
    }, delay);
  };

  // Sends now when open, else queues; false when the queue is full (the data is dropped).
  P.send = function (data) {
    if (this.closed) return false;
    if (this.queue.length >= this.queueLimit) return false;
    this.queue.push(data);
    this._flush();
    return true;
  };

  P._flush = function () {
    var ws = this.socket;
    while (this.queue.length && ws && ws.readyState === 1) {
      ws.send(this.queue.shift());
      this.sentAt = Date.now();
    }
  };

  // Ends the session from this side: no more reconnects; the server's /disconnect follows
  // after its resume window.
  P.close = function (code, reason) {
    this.closed = true;
    this._stop();
    if (this.next) this.next.close();
    if (this.socket) this.socket.close(code || 1000, reason || "");
  };

  return Socketless;
});
