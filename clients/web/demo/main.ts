// The demo page served at `GET /` of the web listener: join as a user name, choose a
// status, watch other names and see them change live. It is a plain app of the client.
import { PresenceClient, type ChosenStatus, type UserPresence } from "../src/index.js";
import { applyStyles } from "./style.js";

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`the page lacks #${id}`);
  return el as T;
}

const ui = {
  connection: byId<HTMLSpanElement>("connection"),
  joinSection: byId<HTMLElement>("join-section"),
  joinForm: byId<HTMLFormElement>("join-form"),
  name: byId<HTMLInputElement>("name"),
  meSection: byId<HTMLElement>("me-section"),
  me: byId<HTMLSpanElement>("me"),
  leave: byId<HTMLButtonElement>("leave"),
  statusForm: byId<HTMLFormElement>("status-form"),
  status: byId<HTMLSelectElement>("status"),
  statusText: byId<HTMLInputElement>("status-text"),
  watchForm: byId<HTMLFormElement>("watch-form"),
  watchName: byId<HTMLInputElement>("watch-name"),
  watched: byId<HTMLUListElement>("watched"),
  log: byId<HTMLOListElement>("log"),
};

let client: PresenceClient | undefined;
const rows = new Map<string, HTMLLIElement>();

function log(text: string): void {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  ui.log.prepend(li);
  while (ui.log.childElementCount > 50) ui.log.lastElementChild?.remove();
}

function setConnection(state: string, text: string): void {
  ui.connection.dataset.state = state;
  ui.connection.textContent = text;
}

function row(userId: string): HTMLLIElement {
  let li = rows.get(userId);
  if (li !== undefined) return li;
  li = document.createElement("li");
  li.dataset.user = userId;
  const name = document.createElement("span");
  name.className = "user";
  name.textContent = userId;
  const status = document.createElement("span");
  status.className = "status";
  status.dataset.status = "unknown";
  status.textContent = "…";
  const detail = document.createElement("span");
  detail.className = "detail";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove";
  remove.textContent = "Remove";
  remove.addEventListener("click", () => {
    client?.unwatch([userId]);
    rows.get(userId)?.remove();
    rows.delete(userId);
  });
  li.append(name, status, detail, remove);
  ui.watched.append(li);
  rows.set(userId, li);
  return li;
}

function show(p: UserPresence): void {
  const li = rows.get(p.userId);
  if (li === undefined) return;
  const status = li.querySelector<HTMLSpanElement>(".status");
  const detail = li.querySelector<HTMLSpanElement>(".detail");
  if (status === null || detail === null) return;
  status.dataset.status = p.status;
  status.textContent = p.status;
  const parts: string[] = [];
  if (p.statusText !== "") parts.push(`“${p.statusText}”`);
  if (p.devices.length > 0) parts.push(`on ${p.devices.join(", ")}`);
  if (p.status === "offline" && p.lastSeenMs > 0) {
    parts.push(`last seen ${new Date(p.lastSeenMs).toLocaleTimeString()}`);
  }
  if (p.denied) parts.push("not allowed to see");
  detail.textContent = parts.join(" · ");
}

function join(name: string): void {
  const params = new URLSearchParams(location.search);
  const token = params.get("access_token") ?? undefined;
  const c = new PresenceClient({
    url: "/v1/session",
    ...(token !== undefined ? { token } : { userId: name }),
    device: "web",
    status: ui.status.value as ChosenStatus,
    statusText: ui.statusText.value,
  });
  client = c;
  c.on("connecting", (e) => setConnection("connecting", e.attempt > 1 ? `connecting (attempt ${e.attempt})…` : "connecting…"));
  c.on("connected", (e) => {
    setConnection("connected", `connected to ${e.nodeId}`);
    ui.me.textContent = e.userId;
    log(`connected as ${e.userId} (session ${e.sessionId})`);
  });
  c.on("disconnected", (e) => {
    if (e.fatal) setConnection("failed", `refused: ${e.reason}`);
    else if (e.retryInMs !== undefined) {
      setConnection("waiting", `disconnected, retrying in ${(e.retryInMs / 1000).toFixed(1)} s`);
    } else setConnection("idle", "not connected");
    log(`disconnected (${e.code}): ${e.reason}`);
  });
  c.on("error", (e) => log(`error ${e.code}: ${e.message}`));
  c.on("presence", show);
  ui.me.textContent = name;
  ui.joinSection.hidden = true;
  ui.meSection.hidden = false;
  ui.watchName.focus();
}

function leave(): void {
  client?.stop();
  client = undefined;
  for (const li of rows.values()) li.remove();
  rows.clear();
  ui.meSection.hidden = true;
  ui.joinSection.hidden = false;
  setConnection("idle", "not connected");
}

applyStyles(document);

ui.joinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const name = ui.name.value.trim();
  if (name !== "") join(name);
});
ui.leave.addEventListener("click", leave);
ui.statusForm.addEventListener("submit", (e) => {
  e.preventDefault();
  try {
    client?.setStatus(ui.status.value as ChosenStatus, ui.statusText.value);
  } catch (err) {
    log(String(err));
  }
});
ui.watchForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const name = ui.watchName.value.trim();
  if (name === "" || client === undefined) return;
  row(name);
  client.watch([name]);
  const known = client.presence(name);
  if (known !== undefined) show(known);
  ui.watchName.value = "";
});
// A closing tab ends the session cleanly, so watchers see this user go offline at once.
addEventListener("pagehide", () => client?.stop());
