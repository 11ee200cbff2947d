'use strict';

// The page of a Cube cluster. Everything it shows it reads through the API
// of the manager that served it (same origin, so no CORS): GET /cluster,
// /nodes and /tasks every second, and GET /events as a stream of changes.
// Any manager answers those reads from its own replicated state and forwards
// writes (stop, drain) to the leader, so the page follows a leader change
// without a reload. If the manager that served it stops answering, the page
// cannot switch to another by itself (another manager is another origin),
// so it says so and links to the others' pages.
//
// With security on, every call carries the token the person typed in, as
// "Authorization: Bearer", kept in sessionStorage: this tab only, gone with
// it. Nothing the API returns is ever parsed as markup: the DOM is built
// with text nodes, and the page's Content-Security-Policy forbids inline
// script besides.
(function () {
  const TOKEN_KEY = 'cube-token';
  const PAGE_PATH = '/ui/';
  const POLL_MS = 1000; // between the end of one poll and the next
  const REQUEST_MS = 5000; // bound on one API call, answer read whole
  const EVENTS_CONNECT_MS = 10000; // bound on opening the event stream
  const DOWN_AFTER = 3; // unanswered polls in a row before the banner
  const ARM_MS = 5000; // a Stop or Drain button waits this long for its confirming click
  const RETRY_WRITE_MS = 15000; // how long a write is retried through an election (503)
  const MAX_EVENTS = 200;
  const MAX_TASK_ROWS = 500;
  const STATES = ['Pending', 'Scheduled', 'Running', 'Completed', 'Failed'];
  const COMPLETED = 3;

  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let needToken = false; // polls and the feed wait for a token
  let cluster = null; // the last ClusterInfo this manager sent
  let nodes = [];
  let tasks = [];
  let failures = 0; // polls in a row this manager did not answer
  let polling = false;
  let pollTimer = 0;
  let feed = null; // the AbortController of the open event stream
  let lastPos = null; // INDEX.SEQ of the last change shown, to resume after
  let messageTimer = 0;
  const armed = new Map(); // "stop:<id>" or "drain:<name>" → when the arming ends (ms)
  const busy = new Set(); // the same keys, while their request runs
  const shown = new Map(); // tbody id → signature of the rows it shows
  const lastLine = new Map(); // task ID → what the feed last showed of it

  // APIError is an answer of the manager other than 2xx.
  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // Unanswered is a call the manager did not answer: refused connection,
  // reset, or no answer within REQUEST_MS.
  class Unanswered extends Error {}

  function authHeaders() {
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  // call sends one API request and returns its JSON answer (null if none).
  async function call(method, path, body) {
    const init = { method, headers: authHeaders(), cache: 'no-store', signal: AbortSignal.timeout(REQUEST_MS) };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp, text;
    try {
      resp = await fetch(path, init);
      text = await resp.text();
    } catch (err) {
      const why = err.name === 'TimeoutError' ? `no answer within ${REQUEST_MS / 1000} s` : err.message;
      throw new Unanswered(`${method} ${path}: ${why}`);
    }
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!resp.ok) {
      throw new APIError(resp.status, (data && data.Message) || text.trim() || resp.statusText);
    }
    return data;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // ---- polling ----

  function schedule(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  async function poll() {
    if (needToken || polling) {
      return;
    }
    polling = true;
    try {
      const [info, n, t] = await Promise.all([call('GET', '/cluster'), call('GET', '/nodes'), call('GET', '/tasks')]);
      failures = 0;
      cluster = info;
      nodes = n || [];
      tasks = t || [];
      hide($('banner'));
      document.body.classList.remove('stale');
      showData();
      render();
      setStatus(`updated ${clock(new Date())}`);
      followEvents();
    } catch (err) {
      pollFailed(err);
    } finally {
      polling = false;
      if (!needToken) {
        schedule(POLL_MS);
      }
    }
  }

  function pollFailed(err) {
    if (err instanceof APIError && (err.status === 401 || err.status === 403)) {
      askToken(err);
      return;
    }
    if (err instanceof Unanswered) {
      failures++;
      setStatus(`no answer from this manager (${failures} in a row)`, true);
      if (failures >= DOWN_AFTER) {
        managerDown(err.message);
      }
      return;
    }
    // The manager answers but cannot serve (503 while it is stalled, for
    // example): its message says why; the page keeps asking.
    failures = 0;
    hide($('banner'));
    setStatus(`${err.status || 'error'}: ${err.message}`, true);
  }

  // ---- the token ----

  function askToken(err) {
    needToken = true;
    stopEvents();
    let msg = '';
    if (err && err.status === 401 && !token) {
      msg = 'This cluster asks for a token.';
    } else if (err && err.status === 401) {
      msg = `The cluster refused this token (401): ${err.message}`;
    } else if (err && err.status === 403) {
      msg = `This token may not read the cluster (403): ${err.message}`;
    } else if (err) {
      msg = err.message;
    }
    if (err && (err.status === 401 || err.status === 403)) {
      forgetToken();
    }
    $('auth-message').textContent = msg;
    hide($('main'));
    hide($('forget-token'));
    show($('login'));
    $('token-input').focus();
    setStatus('waiting for a token');
  }

  function forgetToken() {
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('token-input');
    token = input.value.trim();
    input.value = '';
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    needToken = false;
    $('auth-message').textContent = '';
    setStatus('checking the token…');
    poll();
  });

  $('forget-token').addEventListener('click', () => {
    forgetToken();
    askToken({ message: 'Token forgotten; this tab no longer holds it.' });
  });

  function showData() {
    hide($('login'));
    show($('main'));
    $('forget-token').hidden = !token;
  }

  // ---- the serving manager stopped answering ----

  // addrOK accepts a host:port as the managers advertise them, so that a
  // link built from one can only point at https://host:port/ui/.
  function addrOK(a) {
    return typeof a === 'string' && /^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$/.test(a);
  }

  function pageURL(api) {
    return `${location.protocol}//${api}${PAGE_PATH}`;
  }

  // gossipState is what the gossip pool last said of the manager whose API
  // address is api ("" when it did not say).
  function gossipState(api) {
    const m = ((cluster && cluster.Members) || []).find((x) => x.Role === 'manager' && x.API === api);
    return m ? m.State : '';
  }

  function managerDown(reason) {
    stopEvents();
    document.body.classList.add('stale');
    const self = cluster ? cluster.Self : '';
    const b = $('banner');
    b.replaceChildren(`This manager${self ? ' (' + self + ')' : ''} stopped answering (${reason}); what the page shows is from before. `);
    const others = ((cluster && cluster.Servers) || []).filter((s) => s.ID !== self && addrOK(s.API));
    if (others.length === 0) {
      b.append('No other manager is known to this page: open the page of another manager at https://<its address>/ui/.');
    } else {
      b.append('Open one of: ');
      others.forEach((s, i) => {
        if (i > 0) {
          b.append(', ');
        }
        b.append(h('a', { href: pageURL(s.API), dataset: { manager: s.ID } }, `${s.ID} at ${s.API}`));
        const state = gossipState(s.API);
        if (state && state !== 'alive') {
          b.append(` (last seen ${state})`);
        }
      });
      b.append('. The token is kept per address: give it again there.');
    }
    show(b);
  }

  // ---- the event feed ----

  // followEvents opens GET /events unless a stream is open. Each successful
  // poll calls it, so a stream that ends (the manager closed it, or dropped
  // this page as too slow) is opened again within a second, and none is
  // opened while the manager does not answer or a token is missing.
  async function followEvents() {
    if (feed || needToken) {
      return;
    }
    const ctl = new AbortController();
    feed = ctl;
    setFeedStatus('connecting…');
    const connect = setTimeout(() => ctl.abort(), EVENTS_CONNECT_MS);
    try {
      // After a stream ends, the next one resumes after the last change
      // shown (GET /events?after=INDEX.SEQ), so a reconnect neither misses
      // nor repeats a change; a manager that cannot vouch for every change
      // since answers 410, and the feed says so and starts afresh.
      const path = lastPos ? `/events?after=${lastPos}` : '/events';
      const resp = await fetch(path, { headers: authHeaders(), cache: 'no-store', signal: ctl.signal });
      clearTimeout(connect);
      if (resp.status === 410) {
        lastPos = null;
        $('events').prepend(h('li', { class: 'notice' }, h('time', {}, clock(new Date())),
          'Changes were missed while the feed was away (the manager no longer holds them); the tables are read again every second.'));
        throw new Error('410 Gone');
      }
      if (!resp.ok) {
        throw new Error(`${resp.status} ${resp.statusText}`);
      }
      setFeedStatus('live');
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) {
            const c = JSON.parse(line);
            if (!c.Error && c.Task) {
              lastPos = `${c.Index}.${c.Seq || 0}`;
            }
            onChange(c);
          }
        }
      }
      if (feed === ctl) {
        setFeedStatus('ended; reconnecting…');
      }
    } catch (err) {
      if (feed === ctl) {
        setFeedStatus(`lost (${err.message}); reconnecting…`);
      }
    } finally {
      clearTimeout(connect);
      if (feed === ctl) {
        feed = null;
      }
    }
  }

  function stopEvents() {
    if (feed) {
      const f = feed;
      feed = null;
      f.abort();
    }
    setFeedStatus('stopped');
  }

  function setFeedStatus(s) {
    $('events-status').textContent = s;
    $('events-status').dataset.status = s === 'live' ? 'live' : 'down';
  }

  function onChange(c) {
    const list = $('events');
    if (!c.Error) {
      // A change the feed would show as the line before it for the same
      // task (a new container ID, the ports it was published on) is left
      // out: the tables show the rest.
      const t = c.Task || {};
      const line = `${t.State}|${t.Worker}|${t.Reason}`;
      if (lastLine.get(t.ID) === line) {
        return;
      }
      if (lastLine.size > 10000) {
        lastLine.clear();
      }
      lastLine.set(t.ID, line);
    }
    if (c.Error) {
      list.prepend(h('li', { class: 'notice' }, h('time', {}, clock(new Date())),
        `The manager ended the stream: ${c.Error}. Changes may have been missed; the tables are read again every second.`));
    } else {
      const t = c.Task || {};
      const state = STATES[t.State] || String(t.State);
      list.prepend(h('li', { dataset: { task: t.ID, state, index: c.Index } },
        h('time', {}, clock(new Date())),
        h('b', { title: t.ID }, t.Name || short(t.ID)), ' ',
        h('span', { class: `state state-${state}` }, state),
        t.Worker ? ` on ${t.Worker}` : '',
        t.Reason ? ` — ${t.Reason}` : ''));
    }
    while (list.children.length > MAX_EVENTS) {
      list.lastElementChild.remove();
    }
  }

  // ---- rendering ----

  // h makes an element; strings become text nodes, never markup.
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) {
        continue;
      }
      if (k === 'class') {
        e.className = v;
      } else if (k === 'dataset') {
        for (const [dk, dv] of Object.entries(v)) {
          e.dataset[dk] = String(dv);
        }
      } else {
        e[k] = v;
      }
    }
    for (const c of children) {
      if (c !== null && c !== undefined && c !== false && c !== '') {
        e.append(c instanceof Node ? c : String(c));
      }
    }
    return e;
  }

  // fill replaces the rows of a table body when what they show changed, so
  // that a row under the pointer is not replaced every second for nothing.
  function fill(id, data, rows) {
    const sig = JSON.stringify([data, [...armed.keys()], [...busy]]);
    if (shown.get(id) === sig) {
      return;
    }
    shown.set(id, sig);
    $(id).replaceChildren(...rows());
  }

  function render() {
    const now = Date.now();
    for (const [k, until] of armed) {
      if (until < now) {
        armed.delete(k);
      }
    }
    if (cluster) {
      renderCluster(cluster);
    }
    renderWorkers(nodes);
    renderTasks(tasks);
  }

  function renderCluster(info) {
    const leader = $('leader');
    leader.textContent = info.LeaderID ? `leader ${info.LeaderID} · term ${info.Term}` : 'no leader';
    leader.dataset.id = info.LeaderID || '';
    $('served-by').textContent = `served by ${info.Self}`;
    const servers = (info.Servers || []).slice().sort((a, b) => a.ID.localeCompare(b.ID));
    fill('servers', [info.LeaderID, info.Self, servers, info.Members], () => servers.map((s) => {
      const gossip = gossipState(s.API) || 'unknown';
      let raft = s.Voter ? 'voter' : 'non-voter';
      if (s.Leader) {
        raft = 'leader';
      }
      if (s.Promotion) {
        raft += ` (${s.Promotion})`;
      }
      return h('tr', { dataset: { server: s.ID, leader: s.Leader } },
        h('td', {}, h('b', {}, s.ID), s.ID === info.Self ? ' (this page)' : ''),
        h('td', { class: s.Leader ? 'state state-ok' : '' }, s.Leader ? '★ leader' : raft),
        h('td', { class: 'mono', title: `raft ${s.Addr}` }, s.API || '—'),
        h('td', {}, addrOK(s.API) && s.ID !== info.Self ? h('a', { href: pageURL(s.API) }, 'open') : ''),
        h('td', { class: `state-${gossip}` }, gossip));
    }));
  }

  function renderWorkers(list) {
    const ws = list.slice().sort((a, b) => a.Name.localeCompare(b.Name));
    const alive = ws.filter((w) => w.State === 'alive').length;
    $('workers-count').textContent = `${alive} of ${ws.length} alive`;
    fill('workers', ws, () => ws.map((w) => {
      const key = `drain:${w.Name}`;
      const want = !w.Drain;
      const labels = Object.entries(w.Labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
      return h('tr', { dataset: { worker: w.Name, state: w.State, drain: w.Drain } },
        h('td', {}, h('b', {}, w.Name)),
        h('td', { class: `state state-${w.State}`, title: `since ${when(w.Since)}` }, w.State),
        h('td', { class: w.RuntimeAvailable ? 'state-ok' : 'state-down' }, w.RuntimeAvailable ? 'ok' : 'down'),
        h('td', { class: w.Drain ? 'state state-draining' : 'muted' }, w.Drain ? 'draining' : '—'),
        h('td', {}, `${num(w.AllocatedCpu)} / ${num(w.Cpu)}`),
        h('td', {}, `${bytes(w.AllocatedMemory)} / ${bytes(w.Memory)}`),
        h('td', {}, w.TaskCount),
        h('td', { class: 'muted' }, labels),
        h('td', {}, button('drain', w.Name, w.Name, want ? 'Drain' : 'Undrain', want ? 'Confirm drain' : 'Confirm undrain', { drain: want })));
    }));
  }

  function renderTasks(list) {
    const ended = (t) => t.State === COMPLETED || t.State === 4;
    const ts = list.slice().sort((a, b) => (ended(a) - ended(b)) || (a.Name || '').localeCompare(b.Name || '') || a.ID.localeCompare(b.ID));
    const running = ts.filter((t) => t.State === 2).length;
    const over = ts.filter(ended).length;
    $('tasks-count').textContent = `${running} running · ${ts.length - over} live · ${over} ended`;
    const rows = ts.slice(0, MAX_TASK_ROWS);
    fill('tasks', rows, () => {
      const out = rows.map((t) => {
        const state = STATES[t.State] || String(t.State);
        let action = '';
        if (!ended(t) && t.DesiredState === COMPLETED) {
          action = h('span', { class: 'muted' }, 'stopping…');
        } else if (!ended(t)) {
          action = button('stop', t.ID, t.Name || short(t.ID), 'Stop', 'Confirm stop', {});
        }
        return h('tr', { class: ended(t) ? 'ended' : '', dataset: { task: t.ID, state, worker: t.Worker || '' } },
          h('td', {}, h('b', {}, t.Name || '—')),
          h('td', { class: 'mono', title: t.ID }, short(t.ID)),
          h('td', { class: `state state-${state}` }, state),
          h('td', {}, t.Worker || '—'),
          h('td', {}, t.RestartCount),
          h('td', { class: 'reason' }, t.Reason || ''),
          h('td', { class: 'mono' }, t.Image),
          h('td', { title: t.SubmitTime }, when(t.SubmitTime)),
          h('td', {}, action));
      });
      if (ts.length > rows.length) {
        out.push(h('tr', {}, h('td', { colSpan: 9, class: 'muted' }, `${ts.length - rows.length} more not shown`)));
      }
      return out;
    });
  }

  // button is a Stop or Drain button: the first click arms it, the second,
  // within ARM_MS, sends the request.
  function button(action, key, label, text, confirmText, data) {
    const k = `${action}:${key}`;
    const isArmed = armed.has(k);
    return h('button', {
      type: 'button',
      class: isArmed ? 'armed' : '',
      disabled: busy.has(k),
      dataset: Object.assign({ action, key, label }, data),
    }, busy.has(k) ? '…' : isArmed ? confirmText : text);
  }

  document.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b || b.disabled) {
      return;
    }
    const { action, key, label } = b.dataset;
    const k = `${action}:${key}`;
    if (!armed.has(k)) {
      armed.set(k, Date.now() + ARM_MS);
      render();
      return;
    }
    armed.delete(k);
    act(action, key, label, b.dataset.drain === 'true');
  });

  // act sends a stop or a drain to this manager, which forwards it to the
  // leader. During an election the answer is 503: retried for a while,
  // since both writes may be repeated without harm.
  async function act(action, key, label, drain) {
    const k = `${action}:${key}`;
    let method, path, body, done;
    if (action === 'stop') {
      method = 'DELETE';
      path = `/tasks/${encodeURIComponent(key)}`;
      done = `Stop of ${label} committed: its worker stops the container.`;
    } else {
      method = 'POST';
      path = `/nodes/${encodeURIComponent(key)}/drain`;
      body = { Drain: drain };
      done = drain ? `${label} is draining: its tasks move to the other workers.` : `${label} takes new tasks again.`;
    }
    busy.add(k);
    render();
    const until = Date.now() + RETRY_WRITE_MS;
    try {
      for (;;) {
        try {
          await call(method, path, body);
          say(done);
          return;
        } catch (err) {
          if (err instanceof APIError && err.status === 503 && Date.now() < until) {
            say(`${label}: the cluster cannot take it right now (${err.message}); retrying…`, true);
            await sleep(1000);
            continue;
          }
          if (err instanceof APIError && err.status === 401) {
            askToken(err);
          } else if (err instanceof APIError && err.status === 403) {
            say(`Not allowed with this token (403): ${err.message}`, true);
          } else {
            say(`${label}: ${err.message}`, true);
          }
          return;
        }
      }
    } finally {
      busy.delete(k);
      render();
      schedule(0);
    }
  }

  // ---- small things ----

  function say(msg, isError) {
    const m = $('message');
    m.textContent = msg;
    m.classList.toggle('error', !!isError);
    show(m);
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => hide(m), 15000);
  }

  function setStatus(s, isError) {
    const e = $('status');
    e.textContent = s;
    e.classList.toggle('state-down', !!isError);
  }

  function show(e) {
    e.hidden = false;
  }

  function hide(e) {
    e.hidden = true;
  }

  function short(id) {
    return String(id || '').slice(0, 8);
  }

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  function clock(d) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // when shows an API time as the local clock time, with the date when it
  // is not today; Go's zero time as a dash.
  function when(s) {
    const d = new Date(s);
    if (!s || isNaN(d) || d.getFullYear() < 2000) {
      return '—';
    }
    const today = new Date();
    if (d.toDateString() === today.toDateString()) {
      return clock(d);
    }
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
  }

  function num(x) {
    return String(Number((x || 0).toFixed(2)));
  }

  // bytes prints a size as the CLI does (64.0MiB).
  function bytes(n) {
    if (!n) {
      return '0';
    }
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return i === 0 ? `${n}B` : `${n.toFixed(1)}${units[i]}`;
  }

  poll();
})();
