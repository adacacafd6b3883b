// The gateway's browser phone: JsSIP over the WebSocket of the server this page came
// from (RFC 7118). window.phone is what the buttons use, and what tests drive.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // No STUN or TURN servers: the gateway's site is the network this page lives in.
  const media = {
    mediaConstraints: { audio: true, video: false },
    pcConfig: { iceServers: [] },
  };
  const state = { registration: "unregistered", call: "idle", peer: "" };
  let ua = null;
  let session = null;

  function show() {
    $("registration").textContent = state.registration;
    $("call-state").textContent = state.call;
    $("peer").textContent = state.peer;
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return `${scheme}${location.host}/`;
  }

  function attach(newSession) {
    session = newSession;
    state.peer = newSession.remote_identity.uri.toString();
    newSession.on("progress", () => { state.call = "ringing"; show(); });
    newSession.on("confirmed", () => { state.call = "established"; show(); });
    newSession.on("ended", (e) => { state.call = `ended (${e.cause})`; session = null; show(); });
    newSession.on("failed", (e) => { state.call = `failed (${e.cause})`; session = null; show(); });
    newSession.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", (event) => {
        $("remote").srcObject = event.streams[0];
      });
    });
  }

  function register(user, domain, password) {
    if (ua !== null) ua.stop();
    ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(socketUrl())],
      uri: `sip:${user}@${domain}`,
      password,
      register: true,
      session_timers: false,
    });
    ua.on("registered", () => { state.registration = "registered"; show(); });
    ua.on("unregistered", () => { state.registration = "unregistered"; show(); });
    ua.on("registrationFailed", (e) => {
      state.registration = `failed (${e.cause})`;
      show();
    });
    ua.on("newRTCSession", (e) => {
      attach(e.session);
      if (e.originator === "remote") {
        state.call = "incoming";
        show();
        if ($("autoanswer").checked) answer();
      } else {
        state.call = "calling";
        show();
      }
    });
    ua.start();
  }

  function unregister() { if (ua !== null) ua.unregister(); }
  function call(target) { ua.call(target, media); }
  function answer() { if (session !== null) session.answer(media); }
  function hangup() { if (session !== null) session.terminate(); }

  // Audio bytes sent and received in the current call (WebRTC statistics).
  async function audio() {
    const pc = session !== null ? session.connection : null;
    const totals = { sent: 0, received: 0 };
    if (!pc) return totals;
    (await pc.getStats()).forEach((report) => {
      if (report.kind !== "audio") return;
      if (report.type === "outbound-rtp") totals.sent += report.bytesSent;
      if (report.type === "inbound-rtp") totals.received += report.bytesReceived;
    });
    return totals;
  }

  $("account").addEventListener("submit", (e) => {
    e.preventDefault();
    register($("user").value, $("domain").value, $("password").value);
  });
  $("unregister").addEventListener("click", unregister);
  $("dial").addEventListener("submit", (e) => { e.preventDefault(); call($("target").value); });
  $("answer").addEventListener("click", answer);
  $("hangup").addEventListener("click", hangup);
  $("domain").value = location.hostname;

  window.phone = { register, unregister, call, answer, hangup, audio, state };
})();
