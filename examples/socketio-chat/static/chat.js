// The chat page's logic. Everything received is rendered with textContent (never
// innerHTML), so the page itself cannot be tricked into running a message as HTML:
// what this demo shows is what the firewall in front of the app does.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const name = (params.get("name") || "").trim();
  const transport = params.get("transport");
  const socket = io({
    auth: name ? { name: name } : {},
    transports: transport === "websocket" || transport === "polling" ? [transport] : ["polling", "websocket"],
    reconnection: false, // stay disconnected after a block, so the demo shows it; the button reconnects
  });

  const messages = document.getElementById("messages");
  const status = document.getElementById("status");
  const reconnect = document.getElementById("reconnect");
  const form = document.getElementById("form");
  const text = document.getElementById("text");
  document.getElementById("me").textContent = name || "a guest (add ?name=you to the URL)";

  function add(who, what, cls) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    if (who !== null) {
      const span = document.createElement("span");
      span.className = "name";
      span.textContent = who + ": ";
      li.appendChild(span);
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = what;
    li.appendChild(body);
    messages.appendChild(li);
    messages.scrollTop = messages.scrollHeight;
  }

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label;
    reconnect.hidden = state !== "disconnected";
  }

  function transportName() {
    return socket.io.engine && socket.io.engine.transport ? socket.io.engine.transport.name : "?";
  }

  socket.on("connect", () => {
    setStatus("connected", "connected (" + transportName() + ")");
    socket.io.engine.once("upgrade", () => setStatus("connected", "connected (" + transportName() + ")"));
  });
  socket.on("disconnect", (reason) => {
    setStatus("disconnected", "disconnected: " + reason);
    add(null, "disconnected (" + reason + ")", "sys");
  });
  socket.on("connect_error", (err) => setStatus("disconnected", "connection failed: " + err.message));
  socket.on("history", (items) => items.forEach((m) => add(m.name, m.text)));
  socket.on("chat message", (m) => add(m.name, m.text));
  socket.on("joined", (who) => add(null, who + " joined", "sys"));
  socket.on("left", (who) => add(null, who + " left", "sys"));

  reconnect.addEventListener("click", () => {
    setStatus("connecting", "connecting…");
    socket.connect();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!text.value) return;
    socket.emit("chat message", text.value);
    text.value = "";
  });
})();
