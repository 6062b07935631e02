// The shardcast web console: polls the admin JSON API, draws each stream's bitrate and
// viewers, lists a stream's clients (with a kick button), and plays a stream with
// mpegts.js from the media HTTP listener (HTTP-FLV or WebSocket-FLV).
'use strict';

(function () {
  const POLL_MS = 1500;
  const HISTORY = 120; // points kept per stream: three minutes at POLL_MS
  const TOKEN_KEY = 'shardcast.adminToken';

  const $ = (sel) => document.querySelector(sel);
  const streamsBody = $('#streams tbody');
  const clientsBody = $('#clients tbody');
  const video = $('#video');

  const state = {
    httpPort: null, // the media HTTP listener's port, or null when it is off
    history: new Map(), // stream id -> { last: {t, inBytes, outBytes}, points: [{kin, kout, viewers}] }
    rows: new Map(), // stream id -> its <tr> and the cells updated in place
    streams: new Map(), // stream id -> the API's latest stream object
    selected: null, // the stream id shown in the detail panel
    player: null,
    playing: null, // { id, proto } the player was made for
  };

  // ---- helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function fmtKbps(v) {
    if (v == null || !isFinite(v)) return '–';
    return v >= 10000 ? (v / 1000).toFixed(1) + 'M' : Math.round(v).toString();
  }

  function fmtDuration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
  }

  function showError(message) {
    const e = $('#error');
    e.textContent = message || '';
    e.hidden = !message;
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ cache: 'no-store' }, options));
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    return { status: response.status, body };
  }

  function tracksText(s) {
    const parts = [];
    if (s.video) {
      let v = s.video.codec || 'video';
      if (s.video.width && s.video.height) v += ' ' + s.video.width + '×' + s.video.height;
      if (s.video.fps) v += '@' + Math.round(s.video.fps);
      parts.push(v);
    }
    if (s.audio) {
      let a = s.audio.codec || 'audio';
      if (s.audio.sample_rate) a += ' ' + Math.round(s.audio.sample_rate / 1000) + 'kHz';
      parts.push(a);
    }
    return parts.join(', ') || '–';
  }

  // ---- sparklines ----------------------------------------------------------------------

  const css = getComputedStyle(document.documentElement);
  const COLOR = {
    in: css.getPropertyValue('--in').trim() || '#4cc38a',
    out: css.getPropertyValue('--out').trim() || '#5aa9ff',
    viewers: css.getPropertyValue('--viewers').trim() || '#f2b54a',
    grid: css.getPropertyValue('--line').trim() || '#2c323c',
    text: css.getPropertyValue('--muted').trim() || '#8a94a3',
  };

  // Draws `series` ([{values, color}]) over one shared scale, newest point at the right.
  function spark(canvas, series, label) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, w, h);
    let max = 0;
    for (const s of series) for (const v of s.values) if (v > max) max = v;
    max = max > 0 ? max * 1.1 : 1;
    const pad = 2 * dpr;
    g.strokeStyle = COLOR.grid;
    g.lineWidth = 1;
    g.beginPath(); g.moveTo(0, h - pad); g.lineTo(w, h - pad); g.stroke();
    for (const s of series) {
      const n = s.values.length;
      if (n === 0) continue;
      g.strokeStyle = s.color;
      g.lineWidth = 1.5 * dpr;
      g.beginPath();
      s.values.forEach((v, i) => {
        const x = w - (n - 1 - i) * (w / (HISTORY - 1));
        const y = h - pad - (v / max) * (h - 2 * pad);
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    }
    if (label) {
      g.fillStyle = COLOR.text;
      g.font = (10 * dpr) + 'px system-ui, sans-serif';
      g.textBaseline = 'top';
      g.fillText(label(max / 1.1), 3 * dpr, 2 * dpr);
    }
  }

  function drawRowCharts(id) {
    const row = state.rows.get(id);
    const points = state.history.get(id).points;
    spark(row.bitrate, [
      { values: points.map((p) => p.kin), color: COLOR.in },
      { values: points.map((p) => p.kout), color: COLOR.out },
    ]);
    spark(row.viewers, [{ values: points.map((p) => p.viewers), color: COLOR.viewers }]);
  }

  function drawDetailCharts() {
    const h = state.history.get(state.selected);
    const points = h ? h.points : [];
    spark($('#big-bitrate'), [
      { values: points.map((p) => p.kin), color: COLOR.in },
      { values: points.map((p) => p.kout), color: COLOR.out },
    ], (max) => 'max ' + fmtKbps(max) + ' kb/s');
    spark($('#big-viewers'), [
      { values: points.map((p) => p.viewers), color: COLOR.viewers },
    ], (max) => 'max ' + Math.round(max));
  }

  // ---- the stream list -----------------------------------------------------------------

  // Bitrates from the byte counters' change since the last poll (more current than the
  // API's 30 s averages, which stand in for the first point).
  function record(s, now) {
    let h = state.history.get(s.id);
    if (!h) { h = { last: null, points: [] }; state.history.set(s.id, h); }
    let kin = s.kbps ? s.kbps.recv_30s : 0;
    let kout = s.kbps ? s.kbps.send_30s : 0;
    if (h.last && now > h.last.t) {
      const dt = (now - h.last.t) / 1000;
      kin = Math.max(0, (s.recv_bytes - h.last.inBytes) * 8 / 1000 / dt);
      kout = Math.max(0, (s.send_bytes - h.last.outBytes) * 8 / 1000 / dt);
    }
    h.last = { t: now, inBytes: s.recv_bytes, outBytes: s.send_bytes };
    const viewers = s.viewers ? s.viewers.total : 0;
    h.points.push({ kin, kout, viewers });
    if (h.points.length > HISTORY) h.points.shift();
    return { kin, kout, viewers };
  }

  function makeRow(s) {
    const name = el('button', {
      class: 'play', type: 'button', title: 'Play ' + s.id, 'data-stream': s.id,
      text: '▶ ' + s.id, onclick: () => select(s.id, true),
    });
    const row = {
      tr: el('tr', { 'data-stream': s.id }),
      tracks: el('td'),
      viewerCount: el('td', { class: 'num' }),
      kin: el('td', { class: 'num' }),
      kout: el('td', { class: 'num' }),
      bitrate: el('canvas', { class: 'spark' }),
      viewers: el('canvas', { class: 'spark' }),
    };
    row.tr.append(el('td', {}, name), row.tracks, row.viewerCount, row.kin, row.kout,
      el('td', {}, row.bitrate), el('td', {}, row.viewers));
    return row;
  }

  function renderStreams(list, now) {
    const seen = new Set();
    list.sort((a, b) => a.id.localeCompare(b.id));
    let previous = null;
    for (const s of list) {
      seen.add(s.id);
      state.streams.set(s.id, s);
      const rate = record(s, now);
      let row = state.rows.get(s.id);
      if (!row) { row = makeRow(s); state.rows.set(s.id, row); }
      // Keep rows in order without re-creating them (a click must never land on a row
      // being replaced).
      const want = previous ? previous.nextSibling : streamsBody.firstChild;
      if (want !== row.tr) streamsBody.insertBefore(row.tr, want);
      previous = row.tr;
      row.tracks.textContent = tracksText(s);
      row.viewerCount.textContent = rate.viewers;
      row.kin.textContent = fmtKbps(rate.kin);
      row.kout.textContent = fmtKbps(rate.kout);
      row.tr.classList.toggle('selected', s.id === state.selected);
      drawRowCharts(s.id);
    }
    for (const [id, row] of state.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        state.rows.delete(id);
        state.history.delete(id);
        state.streams.delete(id);
      }
    }
    $('#stream-count').textContent = '(' + list.length + ')';
    $('#no-streams').hidden = list.length > 0;
    if (state.selected) renderDetail();
  }

  // ---- the selected stream: facts, charts, clients, player -----------------------------

  function renderDetail() {
    const s = state.streams.get(state.selected);
    $('#detail-name').textContent = state.selected + (s ? '' : ' (gone)');
    const facts = $('#facts');
    facts.replaceChildren();
    if (s) {
      const add = (k, v) => facts.append(el('dt', { text: k }), el('dd', { text: String(v) }));
      add('Tracks', tracksText(s));
      add('Publisher', s.publisher ? s.publisher.addr + ' (client ' + s.publisher.id + ')' : 'none');
      if (s.live_since_ms) add('Live for', fmtDuration((Date.now() - s.live_since_ms) / 1000));
      add('Viewers', s.viewers ? s.viewers.total + ' (per shard ' + s.viewers.per_shard.join('/') + ')' : 0);
      add('Frames', s.frames + ' (' + s.dropped_frames + ' dropped)');
    }
    drawDetailCharts();
  }

  async function refreshClients() {
    if (!state.selected) return;
    const { status, body } = await api('/api/v1/clients?count=10000');
    if (status !== 200 || !body) return;
    const mine = body.clients.filter((c) => c.stream === state.selected);
    clientsBody.replaceChildren(...mine.map((c) => el('tr', { 'data-client': c.id },
      el('td', { class: 'mono', text: c.id }),
      el('td', { text: c.role }),
      el('td', { text: c.protocol }),
      el('td', { class: 'mono', text: c.addr }),
      el('td', { text: String(c.shard) }),
      el('td', { class: 'num', text: fmtDuration(c.alive) }),
      el('td', { class: 'num', text: fmtKbps(c.kbps.recv_30s) }),
      el('td', { class: 'num', text: fmtKbps(c.kbps.send_30s) }),
      el('td', {}, el('button', {
        class: 'kick', type: 'button', title: 'Disconnect client ' + c.id, text: 'Kick',
        onclick: () => kick(c.id),
      })),
    )));
    if (mine.length === 0) {
      clientsBody.append(el('tr', {}, el('td', { class: 'muted', colspan: '9', text: 'No clients.' })));
    }
  }

  // DELETE /api/v1/clients/{id}; on 401, asks for the admin token once and keeps it for
  // this tab (sessionStorage).
  async function kick(id) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const headers = token ? { Authorization: 'Bearer ' + token } : {};
      const { status, body } = await api('/api/v1/clients/' + encodeURIComponent(id),
        { method: 'DELETE', headers });
      if (status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        const given = window.prompt('Kicking a client needs the admin token ([admin] token):');
        if (!given) return;
        sessionStorage.setItem(TOKEN_KEY, given.trim());
        continue;
      }
      if (status !== 200) showError('kick ' + id + ': ' + ((body && body.message) || 'HTTP ' + status));
      else showError('');
      break;
    }
    refreshClients();
  }

  function selectedProto() {
    return document.querySelector('input[name=proto]:checked').value;
  }

  function flvUrl(s, proto) {
    const secure = location.protocol === 'https:';
    const scheme = proto === 'ws' ? (secure ? 'wss:' : 'ws:') : (secure ? 'https:' : 'http:');
    const path = [s.app, s.name].map(encodeURIComponent).join('/');
    return scheme + '//' + location.hostname + ':' + state.httpPort + '/' + path + '.flv';
  }

  function setPlayerState(text) { $('#player-state').textContent = text; }

  function stopPlayer() {
    if (state.player) {
      try { state.player.pause(); } catch (_) { /* already stopped */ }
      state.player.unload();
      state.player.detachMediaElement();
      state.player.destroy();
    }
    state.player = null;
    state.playing = null;
    setPlayerState('');
  }

  function startPlayer() {
    stopPlayer();
    const s = state.streams.get(state.selected);
    if (!s) return;
    if (state.httpPort == null) {
      setPlayerState('the media HTTP listener is off ([http] listen): nothing to play from');
      return;
    }
    if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {
      setPlayerState('this browser cannot play FLV through Media Source Extensions');
      return;
    }
    const proto = selectedProto();
    const url = flvUrl(s, proto);
    $('#player-url').textContent = url;
    const player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, {
      enableWorker: false,
      lazyLoad: false,
      liveBufferLatencyChasing: true,
      autoCleanupSourceBuffer: true,
    });
    player.on(mpegts.Events.ERROR, (type, detail, info) => {
      setPlayerState('error: ' + type + ' ' + detail + (info && info.msg ? ' (' + info.msg + ')' : ''));
    });
    player.on(mpegts.Events.LOADING_COMPLETE, () => setPlayerState('the stream ended'));
    player.attachMediaElement(video);
    player.load();
    video.muted = true;
    const started = player.play();
    if (started && started.catch) started.catch((e) => setPlayerState('not playing: ' + e.message));
    state.player = player;
    state.playing = { id: s.id, proto };
    setPlayerState('connecting…');
  }

  function select(id, play) {
    state.selected = id;
    $('#detail').hidden = false;
    for (const [rid, row] of state.rows) row.tr.classList.toggle('selected', rid === id);
    renderDetail();
    refreshClients();
    if (play) startPlayer();
  }

  $('#close').addEventListener('click', () => {
    stopPlayer();
    state.selected = null;
    $('#detail').hidden = true;
    for (const row of state.rows.values()) row.tr.classList.remove('selected');
  });
  for (const radio of document.querySelectorAll('input[name=proto]')) {
    radio.addEventListener('change', () => { if (state.playing) startPlayer(); });
  }
  video.addEventListener('timeupdate', () => {
    if (state.player) setPlayerState('playing ' + video.currentTime.toFixed(1) + ' s');
  });

  // ---- polling -------------------------------------------------------------------------

  async function poll() {
    try {
      const [summary, streams] = await Promise.all([
        api('/api/v1/summaries'), api('/api/v1/streams?count=10000'),
      ]);
      if (summary.status !== 200 || streams.status !== 200) {
        throw new Error('HTTP ' + summary.status + '/' + streams.status);
      }
      const sc = summary.body.data.shardcast;
      state.httpPort = sc.http_port == null ? null : sc.http_port;
      $('#summary').textContent = 'v' + sc.version + ' · ' + sc.shard_count + ' shards · ' +
        sc.connections.total + ' connections · up ' + fmtDuration(sc.uptime_seconds) +
        ' · CPU ' + Math.round(sc.cpu_percent) + '%' +
        (state.httpPort == null ? ' · HTTP-FLV off' : ' · HTTP-FLV port ' + state.httpPort);
      renderStreams(streams.body.streams, Date.now());
      if (state.selected) await refreshClients();
      if (!$('#error').textContent.startsWith('kick')) showError('');
    } catch (e) {
      showError('the admin API does not answer: ' + e.message);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
