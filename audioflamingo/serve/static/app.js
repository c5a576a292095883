// The Audio Flamingo chat page: attach audio (upload or record), ask, read the answer as it streams.
// Plain JS, no build step, no network beyond this server. The whole conversation (audio included) is
// sent with every question, as in the OpenAI API; the server keeps encoded audio by content hash, so a
// follow-up question does not re-encode it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { messages: [], pending: [], sampleRate: 16000, busy: false, recorder: null };

// ---------------------------------------------------------------------------------------------------
// audio: any browser-decodable file or recording -> mono 16-bit WAV at the model's rate, base64

function wavBytes(samples, rate) {
  const buf = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVE");
  str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) { // x * 32768, rounded: a 16-bit file decoded and re-encoded is unchanged
    v.setInt16(44 + i * 2, Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32768))), true);
  }
  return new Uint8Array(buf);
}

function toBase64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

async function toWav(arrayBuffer) {
  const Ctx = window.OfflineAudioContext || window.webkitOfflineAudioContext;
  const probe = new Ctx(1, 1, state.sampleRate);
  const decoded = await probe.decodeAudioData(arrayBuffer.slice(0));
  const length = Math.max(1, Math.ceil(decoded.duration * state.sampleRate));
  const ctx = new Ctx(1, length, state.sampleRate); // renders mono at the model's rate (mixes down, resamples)
  const src = ctx.createBufferSource();
  src.buffer = decoded;
  src.connect(ctx.destination);
  src.start();
  const rendered = await ctx.startRendering();
  return { bytes: wavBytes(rendered.getChannelData(0), state.sampleRate), seconds: decoded.duration };
}

async function attach(name, blob) {
  const raw = await blob.arrayBuffer();
  let audio;
  try {
    const wav = await toWav(raw);
    audio = { name, data: toBase64(wav.bytes), format: "wav", url: URL.createObjectURL(blob), seconds: wav.seconds };
  } catch (e) { // the browser cannot decode it: send the file as it is and let the server try
    const ext = (name.split(".").pop() || "wav").toLowerCase();
    audio = { name, data: toBase64(new Uint8Array(raw)), format: ext, url: URL.createObjectURL(blob), seconds: null };
  }
  state.pending.push(audio);
  renderPending();
}

function renderPending() {
  const box = $("attachments");
  box.textContent = "";
  state.pending.forEach((a, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = a.name + (a.seconds ? ` (${a.seconds.toFixed(1)} s)` : "");
    const x = document.createElement("button");
    x.type = "button"; x.textContent = "×"; x.title = "remove";
    x.onclick = () => { state.pending.splice(i, 1); renderPending(); };
    chip.appendChild(x);
    box.appendChild(chip);
  });
}

async function toggleRecording() {
  const btn = $("record");
  if (state.recorder) { state.recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) { status("recording is not available in this browser"); return; }
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
  catch (e) { status("microphone not available: " + e.message); return; }
  const chunks = [];
  const rec = new MediaRecorder(stream);
  rec.ondataavailable = (e) => chunks.push(e.data);
  rec.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    btn.classList.remove("on"); btn.textContent = "Record";
    await attach(`recording-${new Date().toLocaleTimeString()}.webm`, new Blob(chunks, { type: rec.mimeType }));
  };
  rec.start();
  state.recorder = rec;
  btn.classList.add("on"); btn.textContent = "Stop";
}

// ---------------------------------------------------------------------------------------------------
// the conversation

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text || "";
  div.appendChild(span);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function note(div, lines) {
  if (!lines || !lines.length) return;
  const n = document.createElement("div");
  n.className = "note";
  n.textContent = lines.join("\n");
  div.appendChild(n);
}

function status(text) { $("status").textContent = text || ""; }

async function send(ev) {
  ev.preventDefault();
  const text = $("question").value.trim();
  if (state.busy || (!text && !state.pending.length)) return;
  const content = state.pending.map((a) => ({ type: "input_audio", input_audio: { data: a.data, format: a.format } }));
  content.push({ type: "text", text });
  const mine = bubble("user", text);
  state.pending.slice().reverse().forEach((a) => {
    const player = document.createElement("audio");
    player.controls = true; player.src = a.url; player.title = a.name;
    mine.insertBefore(player, mine.firstChild);
  });
  state.messages.push({ role: "user", content });
  state.pending = []; renderPending();
  $("question").value = "";
  await answer();
}

async function answer() {
  state.busy = true; $("send").disabled = true; status("thinking…");
  const out = bubble("assistant", "");
  const textEl = out.querySelector(".text");
  const body = {
    messages: state.messages, stream: true,
    max_tokens: parseInt($("max-tokens").value, 10) || 128,
    temperature: parseFloat($("temperature").value) || 0,
  };
  let full = "";
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { msg = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) { // one server-sent event per blank-line-separated block
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const obj = JSON.parse(data);
          if (obj.error) throw new Error(obj.error.message);
          if (obj.warnings) note(out, obj.warnings);
          const choice = obj.choices && obj.choices[0];
          if (choice && choice.delta && choice.delta.content) {
            full += choice.delta.content;
            textEl.textContent = full;
            out.scrollIntoView({ block: "end" });
          }
        }
      }
    }
    state.messages.push({ role: "assistant", content: full });
    status("");
  } catch (e) {
    out.remove();
    state.messages.pop(); // the question was not answered: take it back so it can be asked again
    bubble("error", "Error: " + e.message);
    status("");
  } finally {
    out.dataset.done = "1";
    state.busy = false; $("send").disabled = false;
  }
}

function reset() {
  state.messages = []; state.pending = [];
  $("log").textContent = ""; renderPending(); status("");
}

// ---------------------------------------------------------------------------------------------------

async function init() {
  $("ask").addEventListener("submit", send);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
  });
  $("file").addEventListener("change", async (e) => {
    for (const f of e.target.files) await attach(f.name, f);
    e.target.value = "";
    status("");
  });
  $("record").addEventListener("click", toggleRecording);
  $("reset").addEventListener("click", reset);
  try {
    const h = await (await fetch("/health")).json();
    state.sampleRate = h.sample_rate || state.sampleRate;
    $("model").textContent = h.model + (h.audio_seconds_used ? ` · listens to the first ${h.audio_seconds_used} s of each audio` : "");
    if (h.limits && h.limits.default_max_tokens) $("max-tokens").value = h.limits.default_max_tokens;
    document.body.dataset.ready = "1";
  } catch (e) { status("server not reachable"); }
}

init();
