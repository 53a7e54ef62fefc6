// Chat client: joins a room over WebSocket, shows history and new messages, and reconnects with
// exponential backoff (with jitter) when the socket drops. Messages are deduplicated by id, since
// history and live broadcasts may overlap after a reconnect.
"use strict";

(function () {
  const root = document.getElementById("chat");
  const statusLine = document.getElementById("status");
  const list = document.getElementById("messages");
  const joinForm = document.getElementById("join");
  const sendForm = document.getElementById("send");
  const input = document.getElementById("message");
  const sendButton = sendForm.querySelector("button");
  const maxChars = Number(root.dataset.maxChars) || 2000;

  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  // Close codes the server sends on purpose (see the README's protocol section).
  const CLOSE_REASONS = {
    1008: "closed by the server: too many messages",
    1009: "closed by the server: message too large",
    1012: "the server restarted",
    1013: "the server is temporarily unavailable",
  };

  let socket = null;
  let room = null;
  let name = null;
  let attempt = 0;
  let reconnectTimer = null;
  const seenIds = new Set();
  const pending = []; // sent, not yet acknowledged: [{text, element}]

  function setStatus(text, kind) {
    statusLine.textContent = text;
    statusLine.className = kind || "";
  }

  function setConnected(connected) {
    input.disabled = !connected;
    sendButton.disabled = !connected;
  }

  function addLine(className, parts) {
    const item = document.createElement("li");
    item.className = className;
    for (const [cls, text] of parts) {
      const span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text;
      item.appendChild(span);
    }
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  function showMessage(message) {
    if (seenIds.has(message.id)) return;
    seenIds.add(message.id);
    const time = new Date(message.sent_at).toLocaleTimeString();
    addLine("message", [["meta", time], ["user", message.user], ["text", message.message]]);
  }

  function acknowledge(message) {
    const index = pending.findIndex((entry) => entry.text === message.message);
    if (index === -1) return;
    pending[index].element.remove();
    pending.splice(index, 1);
  }

  function failPending(reason) {
    for (const entry of pending.splice(0)) {
      entry.element.className = "failed";
      entry.element.lastChild.textContent = entry.text + " (not sent: " + reason + ")";
    }
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ name }).toString();
    return scheme + "//" + window.location.host + "/ws/chat/" + encodeURIComponent(room) + "/?" + query;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    setStatus("Connecting to " + room + "…");
    const ws = new WebSocket(socketUrl());
    socket = ws;

    ws.addEventListener("open", () => {
      attempt = 0;
      setConnected(true);
      setStatus("Connected to " + room, "ok");
    });

    ws.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (data.type === "chat.history") {
        data.messages.forEach(showMessage);
      } else if (data.type === "chat.message") {
        acknowledge(data);
        showMessage(data);
      } else if (data.type === "error") {
        if (data.code === "storage_unavailable") failPending(data.detail);
        addLine("notice", [[null, "Error: " + data.detail + " (" + data.code + ")"]]);
      }
    });

    ws.addEventListener("close", (event) => {
      if (socket !== ws) return; // a newer socket replaced this one
      setConnected(false);
      failPending("connection lost");
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt += 1;
      const reason = CLOSE_REASONS[event.code] || "connection lost (" + event.code + ")";
      setStatus(reason + "; reconnecting in " + Math.round(delay / 1000) + " s", "error");
      reconnectTimer = setTimeout(connect, delay);
    });
  }

  joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    room = document.getElementById("room").value.trim();
    name = document.getElementById("name").value.trim();
    list.replaceChildren();
    seenIds.clear();
    attempt = 0;
    if (socket) {
      const old = socket;
      socket = null;
      old.close(1000);
    }
    connect();
  });

  sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim() || text.length > maxChars || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ message: text }));
    pending.push({ text, element: addLine("pending", [["meta", "sending"], ["text", text]]) });
    input.value = "";
  });

  joinForm.requestSubmit();
})();
