// Minimal demo client (placeholder until the TypeScript client's build replaces this file):
// one WebSocket session at /v1/session with the presence.v1.json subprotocol.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const views = new Map(); // user id -> latest Presence (never an older version)
  let socket = null;
  let heartbeat = null;
  let ref = 0;
  const send = (frame) => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      frame.ref = String(++ref);
      socket.send(JSON.stringify(frame));
    }
  };
  const setConnection = (state, text) => {
    $("connection").dataset.state = state;
    $("connection").textContent = text;
  };
  const render = () => {
    const list = $("people");
    list.replaceChildren();
    for (const [id, p] of [...views.entries()].sort()) {
      const status = p.status || "STATUS_OFFLINE";
      const li = document.createElement("li");
      li.className = status;
      li.dataset.user = id;
      li.dataset.status = status;
      const dot = document.createElement("span");
      dot.className = "dot";
      li.append(dot, `${id}: ${status.replace("STATUS_", "").toLowerCase()}`);
      list.append(li);
    }
  };
  const merge = (presences) => {
    for (const p of presences || []) {
      const old = views.get(p.userId);
      if (!old || BigInt(p.version || "0") >= BigInt(old.version || "0")) views.set(p.userId, p);
    }
    render();
  };
  const connect = () => {
    const name = $("name").value.trim();
    if (!name) return;
    if (socket) socket.close();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/v1/session?user_id=${encodeURIComponent(name)}`;
    socket = new WebSocket(url, "presence.v1.json");
    setConnection("connecting", "connecting...");
    socket.onopen = () => {
      send({ hello: { device: "web", status: $("status").value } });
      const watched = [...views.keys()];
      if (watched.length) send({ subscribe: { userIds: watched } });
    };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.welcome) {
        setConnection("connected", `connected as ${frame.welcome.userId}`);
        clearInterval(heartbeat);
        heartbeat = setInterval(() => send({ heartbeat: {} }), Number(frame.welcome.heartbeatIntervalMs));
      } else if (frame.snapshot) {
        merge(frame.snapshot.presences);
      } else if (frame.update) {
        merge(frame.update.presences);
      } else if (frame.reconnect) {
        socket.close();
        setTimeout(connect, Number(frame.reconnect.retryAfterMs || 0));
      }
    };
    socket.onclose = (event) => {
      clearInterval(heartbeat);
      setConnection("disconnected", `disconnected (${event.code}${event.reason ? ": " + event.reason : ""})`);
    };
  };
  $("connect").addEventListener("click", connect);
  $("status").addEventListener("change", () => send({ setStatus: { status: $("status").value } }));
  $("watch").addEventListener("click", () => {
    const id = $("watch-name").value.trim();
    if (!id) return;
    if (!views.has(id)) views.set(id, { userId: id, status: "STATUS_OFFLINE", version: "0" });
    render();
    send({ subscribe: { userIds: [id] } });
    $("watch-name").value = "";
  });
  window.addEventListener("pagehide", () => socket && socket.close());
})();
