/*
 * voicemix.js: the voicemix web client library (the seed's JS client SDK).
 *
 * A classic script with no dependencies and no build step: load it from the controller
 *   <script src="https://<controller>/web/voicemix.js"></script>
 * and use the global `Voicemix`. The controller's web page (app.js) is a thin UI over it.
 *
 *   const client = new Voicemix.Client({ baseUrl: "https://127.0.0.1:8443" });
 *   await client.signIn(token);            // or, in development mode: await client.devSignIn()
 *   client.on("invited", ({ call, from }) => ...);
 *   const call = await client.startCall({ mode: "auto" });   // or client.joinCall(id), client.callIdentity("bob")
 *   call.on("participants", list => ...);  // also: speakers, joined, left, media, connection, track, stats, ended, error
 *   call.setMuted(true);  const quality = await call.stats();  await call.leave();
 *
 * Tokens stay in memory (never in URLs, storage or logs). Event streams are read with fetch()
 * (Server-Sent Events with an Authorization header, which EventSource cannot send).
 *
 * Media: in a call whose media is on the engine, one RTCPeerConnection to the engine (one
 * sendrecv audio m-line; in an SFU call plus `receiveStreams` recvonly ones, one per forwarded
 * speaker). In a 1:1 call on the direct path, one RTCPeerConnection to the other client, with
 * signaling relayed by the controller; when the call grows, the `media_moved` event makes the
 * client connect to the engine first and drop the direct connection once the engine hears its
 * peer too (no gap). STUN/TURN servers come from /v1/turn/credentials.
 */
(function (global) {
  "use strict";

  // Moving a direct call onto the engine: the direct connection keeps playing until this client's
  // engine connection is up and the engine hears the peer (a `speakers` event naming the peer's
  // new leg), then MOVE_GRACE_MS more (the mix crossing our jitter buffer); after MOVE_TIMEOUT_MS
  // it goes whatever happens (a peer silent all along: nothing to lose).
  const MOVE_GRACE_MS = 300;
  const MOVE_TIMEOUT_MS = 5000;
  const STATS_INTERVAL_MS = 2000;
  const DIRECT_LEVEL_INTERVAL_MS = 250;
  const SPEAKING_LEVEL = 0.02;       // RTCInboundRtpStreamStats.audioLevel (0..1) of a talker

  class Emitter {
    constructor() { this._handlers = new Map(); }
    on(type, handler) {
      if (!this._handlers.has(type)) this._handlers.set(type, new Set());
      this._handlers.get(type).add(handler);
      return () => this.off(type, handler);
    }
    off(type, handler) { const set = this._handlers.get(type); if (set) set.delete(handler); }
    emit(type, detail) {
      for (const handler of Array.from(this._handlers.get(type) || [])) {
        try { handler(detail); } catch (error) { console.error("voicemix handler failed:", error); }
      }
    }
  }

  class VoicemixError extends Error {
    /** An API error: `status` (HTTP), `code` (the API's machine code). */
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  /** ITU-T G.107 E-model with G.113 values, as the controller computes it (controller/emodel.py). */
  function mos(codec, lossPercent, rttMs, jitterBufferMs) {
    const oneWay = (rttMs || 0) / 2 + (jitterBufferMs || 0) + 20;
    const id = 0.024 * oneWay + (oneWay > 177.3 ? 0.11 * (oneWay - 177.3) : 0);
    const impairment = { opus: [0, 20], PCMU: [0, 25.1], PCMA: [0, 25.1] }[codec] || [0, 4.3];
    const [ie, bpl] = impairment;
    const ieEff = ie + (95 - ie) * lossPercent / (lossPercent + bpl);
    const r = 93.2 - id - ieEff;
    if (r <= 0) return 1;
    const value = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6;
    return Math.round(Math.max(1, Math.min(4.5, value)) * 100) / 100;
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) type = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) {
          try { onEvent(type, JSON.parse(data)); } catch (error) { console.error("voicemix event:", error); }
        }
      }
    }
  }

  class Client extends Emitter {
    /**
     * options.baseUrl: the controller (default: this page's origin).
     * options.receiveStreams: recvonly m-lines offered in SFU calls (the engine's sfu_last_n, 3).
     * options.microphone: a function returning a Promise of a MediaStream (default getUserMedia).
     */
    constructor(options = {}) {
      super();
      this.baseUrl = (options.baseUrl || global.location.origin).replace(/\/$/, "");
      this.receiveStreams = options.receiveStreams ?? 3;
      this.microphone = options.microphone || (() => navigator.mediaDevices.getUserMedia({ audio: true }));
      this.identity = null;
      this.calls = new Map();
      this._token = null;
      this._events = null;
    }

    get signedIn() { return this._token !== null; }

    /** Use `token` (a voip token from your service); resolves with the identity. */
    async signIn(token) {
      const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      this._token = token;
      let me;
      try {
        me = await this.request("GET", "/v1/me");  // the controller checks it
      } catch (error) {
        this._token = null;
        throw error;
      }
      this.identity = me.identity || payload.sub;
      this._listen();
      this.emit("signedin", { identity: this.identity });
      return this.identity;
    }

    /** Development mode only (VOICEMIX_DEV): a demo identity, no token needed. */
    async devSignIn(name) {
      const issued = await this.request("POST", "/v1/dev/identities", name ? { name } : {}, false);
      return this.signIn(issued.token);
    }

    signOut() {
      for (const call of this.calls.values()) call.leave().catch(() => {});
      if (this._events) this._events.abort();
      this._events = null;
      this._token = null;
      this.identity = null;
      this.emit("signedout", {});
    }

    /** What the service offers: {dev, direct_one_to_one, turn}. */
    info() { return this.request("GET", "/v1/info", undefined, false); }

    /** Create a call ({mode: "auto"|"mcu"|"sfu", invite: [identities]}) and join it. */
    async startCall(options = {}) {
      const created = await this.request("POST", "/v1/calls", { mode: options.mode || "auto", invite: options.invite || [] });
      return this.joinCall(created.id, options);
    }

    /** A 1:1 call to another identity: they get an `invited` event and join by id. */
    callIdentity(identity, options = {}) { return this.startCall({ ...options, invite: [identity] }); }

    /** Join an existing call by id (a link shares the id, never a token). */
    async joinCall(callId, options = {}) {
      const call = new Call(this, callId, options);
      this.calls.set(callId, call);
      try {
        await call.join();
      } catch (error) {
        this.calls.delete(callId);
        await call.leave().catch(() => {});
        throw error;
      }
      return call;
    }

    async iceServers() {
      try {
        const turn = await this.request("GET", "/v1/turn/credentials");
        return [{ urls: turn.urls, username: turn.username, credential: turn.credential }];
      } catch (error) {
        if (error.status === 404) return [];   // TURN disabled
        throw error;
      }
    }

    async request(method, path, body, authorized = true) {
      const headers = { Accept: "application/json" };
      if (authorized) {
        if (!this._token) throw new VoicemixError(401, "not_signed_in", "sign in first");
        headers.Authorization = `Bearer ${this._token}`;
      }
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(this.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      if (response.status === 204) return null;
      const text = await response.text();
      const data = text ? JSON.parse(text) : null;
      if (!response.ok) {
        const error = (data && data.error) || {};
        throw new VoicemixError(response.status, error.code || `http_${response.status}`, error.message || response.statusText);
      }
      return data;
    }

    /** Read a Server-Sent Events stream until it ends; `onOpen` once subscribed. */
    async stream(path, onEvent, abort, onOpen) {
      const response = await fetch(this.baseUrl + path, {
        headers: { Authorization: `Bearer ${this._token}`, Accept: "text/event-stream" }, signal: abort.signal,
      });
      if (!response.ok) throw new VoicemixError(response.status, "stream_refused", `event stream ${response.status}`);
      if (onOpen) onOpen();
      await readEvents(response, onEvent);
    }

    _listen() {
      if (this._events) this._events.abort();
      const abort = new AbortController();
      this._events = abort;
      const loop = async () => {
        while (!abort.signal.aborted) {
          try {
            await this.stream("/v1/events", (type, event) => {
              if (type === "call_invited") this.emit("invited", { call: event.call, from: event.from, mode: event.mode });
            }, abort);
          } catch (error) {
            if (abort.signal.aborted) return;
          }
          await new Promise((resolve) => setTimeout(resolve, 2000));
        }
      };
      loop();
    }
  }

  class Call extends Emitter {
    constructor(client, id, options) {
      super();
      this.client = client;
      this.id = id;
      this.options = options;
      this.mode = null;
      this.media = null;              // "direct" or "engine"
      this.participantId = null;
      this.participants = new Map();  // id -> participant (from the call and its events)
      this.speakers = [];
      this.muted = false;
      this.ended = false;
      this.local = null;              // the microphone MediaStream
      this.engine = null;             // RTCPeerConnection to the engine
      this.direct = null;             // RTCPeerConnection to the other client (direct 1:1)
      this.remote = [];               // {stream, element, path}
      this.moveGapMs = null;
      this._directId = null;
      this._peerId = null;
      this._abort = new AbortController();
      this._timers = [];
      this._pendingCandidates = [];
      this._moving = null;
    }

    // ---------------------------------------------------------------------------------- joining
    async join() {
      const info = await this.client.request("GET", `/v1/calls/${this.id}`);
      this.mode = info.mode;
      this._absorb(info);
      this.local = await this.client.microphone();
      this._iceServers = await this.client.iceServers();
      await this._listen();   // subscribed before anyone can signal to us
      if (info.media === "direct") {
        try {
          await this._joinDirect();
          this._startTimers();
          return this;
        } catch (error) {
          if (error.code !== "media_on_engine") throw error;
        }
      }
      await this._joinEngine(null);
      this._startTimers();
      return this;
    }

    async _joinEngine(replaces) {
      const pc = new RTCPeerConnection({ iceServers: this._iceServers, ...(this.options.rtcConfiguration || {}) });
      this.engine = pc;
      const track = this.local.getAudioTracks()[0];
      track.enabled = !this.muted;
      pc.addTransceiver(track, { direction: "sendrecv", streams: [this.local] });
      if (this.mode === "sfu") {
        for (let i = 0; i < this.client.receiveStreams; i++) pc.addTransceiver("audio", { direction: "recvonly" });
      }
      pc.ontrack = (event) => this._play(event, "engine");
      pc.onconnectionstatechange = () => this.emit("connection", { path: "engine", state: pc.connectionState });
      await pc.setLocalDescription(await pc.createOffer());
      const body = { sdp: pc.localDescription.sdp };
      if (replaces) body.replaces = replaces;
      const joined = await this.client.request("POST", `/v1/calls/${this.id}/participants`, body);
      this.participantId = joined.id;
      this.media = "engine";
      await pc.setRemoteDescription({ type: "answer", sdp: joined.sdp });
      if (this.muted) {
        await this.client.request("PATCH", `/v1/calls/${this.id}/participants/${joined.id}`, { muted: true });
      }
      this.emit("media", { media: "engine" });
    }

    async _joinDirect() {
      const joined = await this.client.request("POST", `/v1/calls/${this.id}/direct`, {});
      this._directId = joined.id;
      this.participantId = joined.id;
      this.media = "direct";
      this._peerId = joined.peer;
      this._newDirect();
      if (joined.role === "offerer") await this._offerDirect();
      this.emit("media", { media: "direct" });
    }

    _newDirect() {
      const pc = new RTCPeerConnection({ iceServers: this._iceServers, ...(this.options.rtcConfiguration || {}) });
      this.direct = pc;
      pc.ontrack = (event) => this._play(event, "direct");
      pc.onicecandidate = (event) => {
        if (event.candidate && this._peerId) {
          this._signal({ type: "candidate", candidate: event.candidate.toJSON() }).catch(() => {});
        }
      };
      pc.onconnectionstatechange = () => this.emit("connection", { path: "direct", state: pc.connectionState });
      return pc;
    }

    async _offerDirect() {
      const pc = this.direct;
      const track = this.local.getAudioTracks()[0];
      track.enabled = !this.muted;
      pc.addTransceiver(track, { direction: "sendrecv", streams: [this.local] });
      await pc.setLocalDescription(await pc.createOffer());
      await this._signal({ type: "offer", sdp: pc.localDescription.sdp });
    }

    _signal(signal) {
      return this.client.request("POST", `/v1/calls/${this.id}/signal`, { from: this._directId, to: this._peerId, ...signal });
    }

    async _onSignal(event) {
      if (event.to !== this._directId || !this.direct) return;
      const pc = this.direct;
      const signal = event.signal;
      this._peerId = event.from;
      if (signal.type === "offer") {
        await pc.setRemoteDescription({ type: "offer", sdp: signal.sdp });
        const track = this.local.getAudioTracks()[0];
        track.enabled = !this.muted;
        const transceiver = pc.getTransceivers().find((t) => t.receiver.track.kind === "audio");
        await transceiver.sender.replaceTrack(track);
        transceiver.direction = "sendrecv";
        transceiver.sender.setStreams(this.local);
        await pc.setLocalDescription(await pc.createAnswer());
        await this._signal({ type: "answer", sdp: pc.localDescription.sdp });
        await this._flushCandidates();
      } else if (signal.type === "answer") {
        await pc.setRemoteDescription({ type: "answer", sdp: signal.sdp });
        await this._flushCandidates();
      } else if (signal.type === "candidate") {
        if (pc.remoteDescription) await pc.addIceCandidate(signal.candidate).catch(() => {});
        else this._pendingCandidates.push(signal.candidate);
      } else if (signal.type === "bye") {
        this._dropDirect();
      }
    }

    async _flushCandidates() {
      const pending = this._pendingCandidates.splice(0);
      for (const candidate of pending) await this.direct.addIceCandidate(candidate).catch(() => {});
    }

    // ------------------------------------------------------------------- direct -> engine move
    async _moveToEngine() {
      if (this._moving || !this._directId) return;
      const startedAt = performance.now();
      this._moving = { peerMoved: !this._peerId, engineUp: false, startedAt };
      this.emit("media", { media: "moving" });
      await this._joinEngine(this._directId);
      const pc = this.engine;
      const done = () => this._moving && this._moving.peerMoved && this._moving.engineUp;
      const settle = () => { if (done()) setTimeout(() => this._finishMove(), MOVE_GRACE_MS); };
      const watch = () => {
        if (pc.connectionState === "connected" && this._moving) { this._moving.engineUp = true; settle(); }
      };
      pc.addEventListener("connectionstatechange", watch);
      watch();
      this._moving.settle = settle;
      setTimeout(() => this._finishMove(), MOVE_TIMEOUT_MS);
    }

    _finishMove() {
      if (!this._moving) return;
      this.moveMs = performance.now() - this._moving.startedAt;
      this._moving = null;
      this._dropDirect();
      this._directId = null;
      this.emit("media", { media: "engine", moveMs: this.moveMs });
    }

    _dropDirect() {
      if (!this.direct) return;
      this.direct.close();
      this.direct = null;
      this.remote = this.remote.filter((r) => {
        if (r.path === "direct") { r.element.remove(); return false; }
        return true;
      });
      this.emit("tracks", this.remote);
    }

    // ----------------------------------------------------------------------------------- events
    _listen() {
      const abort = this._abort;
      let opened;
      const subscribed = new Promise((resolve) => { opened = resolve; });
      setTimeout(opened, 5000);  // do not wait forever for a stream that will not open
      const loop = async () => {
        while (!abort.signal.aborted && !this.ended) {
          try {
            await this.client.stream(`/v1/calls/${this.id}/events`, (type, event) => this._onEvent(type, event), abort, opened);
            if (!this.ended && !abort.signal.aborted) await this._refresh();
          } catch (error) {
            if (abort.signal.aborted) return;
            if (error.status === 404 || error.status === 403) { this._end("gone"); return; }
          }
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      };
      loop();
      return subscribed;
    }

    _onEvent(type, event) {
      switch (type) {
        case "participant_joined": {
          const p = event.participant;
          this.participants.set(p.id, p);
          if (p.replaces) this.participants.delete(p.replaces);
          if (this._moving && p.replaces && p.replaces === this._peerId) {
            // the peer has an engine leg now; it has moved once the engine hears it (speakers)
            this._moving.peerEngineId = p.id;
          }
          if (this.media === "direct" && p.media === "direct" && p.id !== this._directId) this._peerId = p.id;
          this.emit("joined", p);
          this.emit("participants", this.participantList());
          break;
        }
        case "participant_left":
        case "participant_failed":
          if (!(type === "participant_left" && event.reason === "moved_to_engine")) {
            if (this._moving && event.participant_id === this._peerId) { this._moving.peerMoved = true; this._moving.settle(); }
          }
          this.participants.delete(event.participant_id);
          if (event.participant_id === this.participantId && event.reason !== "moved_to_engine") this._end(event.reason);
          this.emit(type === "participant_failed" ? "failed" : "left", event);
          this.emit("participants", this.participantList());
          break;
        case "participant_updated": {
          const p = this.participants.get(event.participant_id);
          if (p) p.muted = event.muted;
          this.emit("participants", this.participantList());
          break;
        }
        case "speakers":
          this.speakers = event.participant_ids;
          if (this._moving && this._moving.peerEngineId && this.speakers.includes(this._moving.peerEngineId)) {
            this._moving.peerMoved = true;   // its voice reaches the engine: the mix carries it
            this._moving.settle();
          }
          this.emit("speakers", this.speakers);
          break;
        case "dominant_speaker":
          this.emit("dominant", event.participant_id);
          break;
        case "signal":
          this._onSignal(event).catch((error) => this.emit("error", error));
          break;
        case "media_moved":
          if (this._directId && event.participant_ids.includes(this._directId)) {
            this._moveToEngine().catch((error) => this.emit("error", error));
          }
          break;
        case "call_ended":
          this._end(event.reason);
          break;
        default:
          this.emit(type, event);
      }
    }

    _absorb(info) {
      this.participants = new Map(info.participants.map((p) => [p.id, p]));
      this.emit("participants", this.participantList());
    }

    async _refresh() {
      const info = await this.client.request("GET", `/v1/calls/${this.id}`);
      this._absorb(info);
      return info;
    }

    participantList() { return Array.from(this.participants.values()); }

    // ------------------------------------------------------------------------------------ media
    _play(event, path) {
      // one stream per track: an SFU's slots share a stream id, and an element plays every track
      // of its stream
      const stream = new MediaStream([event.track]);
      const element = document.createElement("audio");
      element.autoplay = true;
      element.muted = false;       // a muted element makes Chrome zero the receive statistics
      element.srcObject = stream;
      element.dataset.path = path;
      element.dataset.mid = event.transceiver ? event.transceiver.mid : "";
      (this.options.audioContainer || document.body).appendChild(element);
      element.play().catch(() => {});
      const entry = { stream, element, path, mid: element.dataset.mid, track: event.track };
      this.remote.push(entry);
      this.emit("track", entry);
      this.emit("tracks", this.remote);
    }

    /** Mute or unmute this participant (the track stops sending sound; the call shows it). */
    async setMuted(muted) {
      this.muted = muted;
      for (const track of this.local ? this.local.getAudioTracks() : []) track.enabled = !muted;
      if (this.media === "engine" && this.participantId) {
        await this.client.request("PATCH", `/v1/calls/${this.id}/participants/${this.participantId}`, { muted });
      }
      this.emit("muted", muted);
    }

    /**
     * Quality per participant: {participantId: {jitter_ms, loss_percent, rtt_ms, mos, ...}}: the
     * engine's per-leg figures for engine calls, this browser's getStats() on a direct call.
     */
    async stats() {
      const result = {};
      if (this.media === "engine") {
        const info = await this._refresh();
        for (const p of info.participants) if (p.stats) result[p.id] = { label: p.label, ...p.stats };
      }
      const pc = this.direct || this.engine;
      if (pc) {
        const local = await localStats(pc);
        result.local = local;
        if (this.media === "direct" && this._peerId) {
          result[this._peerId] = { label: (this.participants.get(this._peerId) || {}).label, ...local };
        }
      }
      this.emit("stats", result);
      return result;
    }

    _startTimers() {
      this._timers.push(setInterval(() => { this.stats().catch(() => {}); }, STATS_INTERVAL_MS));
      this._timers.push(setInterval(() => this._directSpeakers(), DIRECT_LEVEL_INTERVAL_MS));
    }

    async _directSpeakers() {
      if (this.media !== "direct" || !this.direct || !this._peerId) return;
      const report = await this.direct.getStats();
      let level = 0;
      report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") level = Math.max(level, s.audioLevel || 0); });
      const speakers = level > SPEAKING_LEVEL ? [this._peerId] : [];
      if (speakers.join() !== this.speakers.join()) {
        this.speakers = speakers;
        this.emit("speakers", speakers);
      }
    }

    /** Leave the call (the call goes on for the others). */
    async leave() {
      const id = this.participantId;
      if (id && !this.ended) {
        // first: the controller records "removed", not the DTLS close that follows
        try { await this.client.request("DELETE", `/v1/calls/${this.id}/participants/${id}`); } catch (error) { /* gone already */ }
      }
      this._end("left");
    }

    /** End the call for everyone. */
    async hangUp() {
      this._end("ended");
      await this.client.request("DELETE", `/v1/calls/${this.id}`).catch(() => {});
    }

    _end(reason) {
      if (this.ended) return;
      this.ended = true;
      this._abort.abort();
      for (const timer of this._timers) clearInterval(timer);
      for (const pc of [this.engine, this.direct]) if (pc) pc.close();
      for (const r of this.remote) r.element.remove();
      this.remote = [];
      if (this.local) for (const track of this.local.getTracks()) track.stop();
      this.client.calls.delete(this.id);
      this.emit("ended", { reason });
    }
  }

  async function localStats(pc) {
    const report = await pc.getStats();
    const out = { packets_received: 0, packets_lost: 0, jitter_ms: null, rtt_ms: null, audio_level: 0,
                  samples_received: 0, concealed_samples: 0, packets_sent: 0 };
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.packets_received += s.packetsReceived || 0;
        out.packets_lost += s.packetsLost || 0;
        out.jitter_ms = Math.max(out.jitter_ms || 0, (s.jitter || 0) * 1000);
        out.audio_level = Math.max(out.audio_level, s.audioLevel || 0);
        out.samples_received += s.totalSamplesReceived || 0;
        out.concealed_samples += s.concealedSamples || 0;
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        out.packets_sent += s.packetsSent || 0;
      } else if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        out.rtt_ms = s.currentRoundTripTime * 1000;
      }
    });
    const total = out.packets_received + out.packets_lost;
    out.loss_percent = total ? (100 * out.packets_lost) / total : 0;
    out.mos = mos("opus", out.loss_percent, out.rtt_ms, 60);
    return out;
  }

  global.Voicemix = { Client, Call, VoicemixError, mos, version: "1" };
})(typeof window !== "undefined" ? window : globalThis);
