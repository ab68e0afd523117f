/*
 * The voicemix web page: a thin UI over voicemix.js (sign in, start/join/leave, 1:1 calls,
 * mute, who is speaking, live quality). The token lives in memory only: a reload signs out.
 * A call link carries the call id in the fragment (#call=<id>), never a token.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const state = { client: null, call: null, info: null, toneContext: null };
  window.voicemixApp = state;   // for tests and the browser console: no secrets in it

  function log(text) {
    const item = document.createElement("li");
    item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    $("log").prepend(item);
  }

  function show(panel) {
    $("sign-in-panel").classList.toggle("hidden", panel !== "sign-in");
    $("lobby-panel").classList.toggle("hidden", panel !== "lobby");
    $("call-panel").classList.toggle("hidden", panel !== "call");
    $("sign-out").classList.toggle("hidden", panel === "sign-in");
  }

  function callFromHash() {
    const match = /call=([A-Za-z0-9_-]+)/.exec(window.location.hash);
    return match ? match[1] : null;
  }

  /** A test tone as the microphone (WebAudio oscillator): checks audio without a device. */
  async function microphone() {
    if ($("microphone").value !== "tone") return navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    state.toneContext = context;
    const oscillator = context.createOscillator();
    oscillator.frequency.value = Number($("tone-hz").value) || 440;
    const gain = context.createGain();
    gain.gain.value = 0.3;
    const destination = context.createMediaStreamDestination();
    oscillator.connect(gain).connect(destination);
    oscillator.start();
    await context.resume();
    return destination.stream;
  }

  async function signedIn(identity) {
    $("whoami").textContent = `signed in as ${identity}`;
    $("token").value = "";
    log(`signed in as ${identity}`);
    show("lobby");
    const pending = callFromHash();
    if (pending) {
      $("call-id").value = pending;
      await enter(() => state.client.joinCall(pending));
    }
  }

  async function enter(makeCall) {
    try {
      const call = await makeCall();
      state.call = call;
      window.location.hash = `call=${call.id}`;
      renderCall(call);
      show("call");
      log(`joined call ${call.id} (${call.mode}, media ${call.media})`);
    } catch (error) {
      log(`could not join: ${error.message}`);
    }
  }

  function renderCall(call) {
    $("call-name").textContent = call.id;
    const link = `${window.location.origin}/#call=${call.id}`;
    $("call-link").href = link;
    $("call-link").textContent = link;
    $("call-mode").textContent = call.mode;
    $("call-media").textContent = call.media;
    $("mute").setAttribute("aria-pressed", "false");
    $("mute").textContent = "Mute";
    call.on("participants", () => renderParticipants(call));
    call.on("speakers", () => renderParticipants(call));
    call.on("stats", (stats) => renderParticipants(call, stats));
    call.on("media", (event) => {
      $("call-media").textContent = event.media;
      log(`media: ${event.media}${event.moveMs ? ` (moved in ${Math.round(event.moveMs)} ms)` : ""}`);
    });
    call.on("connection", (event) => log(`${event.path} connection ${event.state}`));
    call.on("joined", (p) => log(`${p.label} joined`));
    call.on("left", (event) => log(`${event.participant_id} left (${event.reason})`));
    call.on("failed", (event) => log(`${event.participant_id} failed (${event.reason})`));
    call.on("error", (error) => log(`error: ${error.message || error}`));
    call.on("ended", (event) => {
      log(`call ended (${event.reason})`);
      if (state.call === call) {
        state.call = null;
        window.location.hash = "";
        show("lobby");
      }
    });
    renderParticipants(call);
  }

  function renderParticipants(call, stats) {
    if (stats) state.lastStats = stats;
    stats = state.lastStats || {};
    const body = $("participants").querySelector("tbody");
    body.textContent = "";
    const fmt = (value, digits) => (value === null || value === undefined ? "-" : Number(value).toFixed(digits));
    for (const p of call.participantList()) {
      const row = document.createElement("tr");
      row.dataset.participant = p.id;
      if (call.speakers.includes(p.id)) row.classList.add("speaking");
      const s = stats[p.id] || {};
      const mine = p.id === call.participantId ? " (you)" : "";
      const cells = [null, `${p.label}${mine}`, p.muted ? "yes" : "", fmt(s.jitter_ms, 1),
                     fmt(s.loss_percent, 1), fmt(s.rtt_ms, 0), fmt(s.mos, 2)];
      cells.forEach((text, index) => {
        const cell = document.createElement("td");
        if (index === 0) {
          const dot = document.createElement("span");
          dot.className = "indicator";
          dot.title = "speaking";
          cell.appendChild(dot);
        } else {
          cell.textContent = text;
          if (index >= 3) cell.className = "num";
        }
        row.appendChild(cell);
      });
      body.appendChild(row);
    }
  }

  function addInvitation(invitation) {
    const item = document.createElement("li");
    item.textContent = `${invitation.from} invites you to a call `;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Join";
    button.addEventListener("click", () => { item.remove(); enter(() => state.client.joinCall(invitation.call)); });
    item.appendChild(button);
    $("invitations").appendChild(item);
    log(`${invitation.from} invites you (call ${invitation.call})`);
  }

  async function main() {
    const client = new Voicemix.Client({
      microphone,
      receiveStreams: 3,
    });
    state.client = client;
    client.on("invited", addInvitation);
    try {
      state.info = await client.info();
      $("dev-panel").classList.toggle("hidden", !state.info.dev);
    } catch (error) {
      log(`the service does not answer: ${error.message}`);
    }
    show("sign-in");

    $("sign-in-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await signedIn(await client.signIn($("token").value.trim()));
      } catch (error) {
        log(`sign-in refused: ${error.message}`);
      }
    });
    $("dev-sign-in").addEventListener("click", async () => {
      try {
        await signedIn(await client.devSignIn());
      } catch (error) {
        log(`no demo identity: ${error.message}`);
      }
    });
    $("sign-out").addEventListener("click", () => {
      client.signOut();
      state.call = null;
      $("whoami").textContent = "not signed in";
      show("sign-in");
    });
    $("start-call").addEventListener("click", () => enter(() => client.startCall({ mode: $("mode").value, audioContainer: $("audio") })));
    $("join-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("call-id").value.trim();
      const match = /call=([A-Za-z0-9_-]+)/.exec(value);
      const id = match ? match[1] : value;
      if (id) enter(() => client.joinCall(id, { audioContainer: $("audio") }));
    });
    $("dial-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const callee = $("callee").value.trim();
      if (callee) enter(() => client.callIdentity(callee, { mode: "auto", audioContainer: $("audio") }));
    });
    $("mute").addEventListener("click", async () => {
      const call = state.call;
      if (!call) return;
      const muted = !call.muted;
      try {
        await call.setMuted(muted);
        $("mute").setAttribute("aria-pressed", String(muted));
        $("mute").textContent = muted ? "Unmute" : "Mute";
        log(muted ? "muted" : "unmuted");
      } catch (error) {
        log(`mute failed: ${error.message}`);
      }
    });
    $("leave").addEventListener("click", async () => {
      const call = state.call;
      if (call) await call.leave();
    });
  }

  main();
})();
