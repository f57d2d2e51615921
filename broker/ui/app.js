// The dashboard: reads the broker's public API every few seconds and draws what it finds.
// Plain JavaScript, no dependencies. Text from the broker is always set as text, never as
// HTML.
"use strict";

const REFRESH_MS = 2000;
const MAX_TOPICS = 100; // topics described per refresh
const TAIL_GROUP = "myqueue-ui";
const TAIL_WAIT_MS = 10000;
const TAIL_KEEP = 100; // messages kept in the tail

const previousEnds = new Map(); // topic -> {end, at}: for the message rate
let tailRun = 0; // bumped when the tail's topic changes: older loops stop

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.message || `HTTP ${response.status}`);
    error.code = body.code;
    throw error;
  }
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function rate(topic, now) {
  const before = previousEnds.get(topic.name);
  previousEnds.set(topic.name, { end: topic.end_offset, at: now });
  if (!before || now <= before.at) return "—";
  const perSecond = (topic.end_offset - before.end) / ((now - before.at) / 1000);
  return perSecond.toFixed(perSecond < 10 ? 1 : 0);
}

async function refreshStore() {
  const store = document.getElementById("store");
  try {
    const health = await api("/healthz");
    store.textContent = `Store: ${health.store}, available`;
    store.className = "";
    return true;
  } catch (error) {
    store.textContent = `Store: UNAVAILABLE (${error.message})`;
    store.className = "down";
    return false;
  }
}

async function describeTopics() {
  const names = (await api("/topics")).topics;
  const shown = names.slice(0, MAX_TOPICS);
  const described = await Promise.all(
    shown.map((name) => api(`/topics/${encodeURIComponent(name)}`).catch(() => null)));
  document.getElementById("topics-note").textContent = names.length > shown.length
    ? `Showing ${shown.length} of ${names.length} topics.` : "";
  return described.filter((topic) => topic !== null);
}

function drawTopics(topics, now) {
  const body = document.querySelector("#topics tbody");
  body.replaceChildren();
  for (const topic of topics) {
    const row = document.createElement("tr");
    cell(row, topic.name);
    cell(row, rate(topic, now), "num");
    cell(row, String(topic.start_offset), "num");
    cell(row, String(topic.end_offset), "num");
    cell(row, String(topic.messages), "num");
    cell(row, bytes(topic.bytes), "num");
    body.appendChild(row);
  }
}

// One row per consumer group, one per topic for its anonymous consumers together.
function consumerRows(topics) {
  const rows = [];
  for (const topic of topics) {
    const anonymous = topic.consumers.filter((c) => c.group === null);
    for (const c of topic.consumers) {
      if (c.group !== null) {
        rows.push({ topic: topic.name, who: `group ${c.group}`, lag: c.lag,
          position: String(c.position) });
      }
    }
    if (anonymous.length > 0) {
      const worst = anonymous.reduce((a, b) => (b.lag > a.lag ? b : a));
      rows.push({
        topic: topic.name,
        who: `${anonymous.length} anonymous (largest lag shown)`,
        lag: worst.lag,
        position: String(worst.position),
      });
    }
  }
  return rows.sort((a, b) => b.lag - a.lag || a.topic.localeCompare(b.topic));
}

function drawConsumers(topics) {
  const body = document.querySelector("#consumers tbody");
  body.replaceChildren();
  for (const c of consumerRows(topics)) {
    const row = document.createElement("tr");
    if (c.lag > 0) row.className = "behind";
    cell(row, c.topic);
    cell(row, c.who);
    cell(row, String(c.lag), "num lag");
    cell(row, c.position, "num");
    body.appendChild(row);
  }
}

function drawTailChoices(topics) {
  const select = document.getElementById("tail-topic");
  const known = new Set([...select.options].map((o) => o.value));
  for (const topic of topics) {
    if (!known.has(topic.name)) select.appendChild(new Option(topic.name, topic.name));
  }
}

async function refresh() {
  const up = await refreshStore();
  if (up) {
    try {
      const topics = await describeTopics();
      const now = Date.now();
      drawTopics(topics, now);
      drawConsumers(topics);
      drawTailChoices(topics);
    } catch (error) {
      document.getElementById("topics-note").textContent = `Cannot read topics: ${error.message}`;
    }
  }
  document.getElementById("refreshed").textContent =
    `Refreshed ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
  setTimeout(refresh, REFRESH_MS);
}

function showMessage(message) {
  const list = document.getElementById("tail");
  const item = document.createElement("li");
  item.value = message.offset;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `#${message.offset} ${new Date(message.timestamp).toLocaleTimeString()} `;
  item.appendChild(meta);
  item.appendChild(document.createTextNode(message.message));
  list.prepend(item);
  while (list.children.length > TAIL_KEEP) list.lastElementChild.remove();
}

// Reads `topic` from its end with long polls, until the tail's topic changes.
async function tail(topic) {
  const run = ++tailRun;
  const status = document.getElementById("tail-status");
  document.getElementById("tail").replaceChildren();
  if (!topic) return;
  status.textContent = `Waiting for new messages in ${topic}…`;
  try {
    const json = { "Content-Type": "application/json" };
    const { consumer_id } = await api("/consumer/register", {
      method: "POST", headers: json,
      body: JSON.stringify({ topic, group: TAIL_GROUP, start: "end" }),
    });
    let offset = (await api(`/topics/${encodeURIComponent(topic)}`)).end_offset;
    while (run === tailRun) {
      status.textContent = `Following ${topic} from offset ${offset}.`;
      const query = new URLSearchParams({ topic, consumer_id, offset, wait_ms: TAIL_WAIT_MS });
      const fetched = await api(`/consumer/fetch?${query}`);
      if (run !== tailRun) return;
      fetched.messages.forEach(showMessage);
      if (fetched.next_offset !== offset) {
        offset = fetched.next_offset;
        // The group's position follows the tail, so it shows no lag while the page is open.
        await api("/consumer/commit", {
          method: "POST", headers: json,
          body: JSON.stringify({ topic, consumer_id, offset }),
        });
      }
    }
  } catch (error) {
    if (run !== tailRun) return;
    status.textContent = `Tail stopped: ${error.message}. Retrying in 5 s.`;
    setTimeout(() => { if (run === tailRun) tail(topic); }, 5000);
  }
}

document.getElementById("tail-topic").addEventListener("change", (event) => {
  const url = new URL(location.href);
  if (event.target.value) url.searchParams.set("tail", event.target.value);
  else url.searchParams.delete("tail");
  history.replaceState(null, "", url);
  tail(event.target.value);
});

// `/ui?tail=TOPIC` opens with that topic's tail.
const asked = new URLSearchParams(location.search).get("tail");
if (asked) {
  const select = document.getElementById("tail-topic");
  select.appendChild(new Option(asked, asked));
  select.value = asked;
  tail(asked);
}
refresh();
