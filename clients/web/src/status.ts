// Status names for apps: lower-case words instead of the generated enum's numbers.
import { Status } from "./gen/presence/v1/presence_pb.js";

/** How a user looks: `offline` is derived by the node and cannot be chosen. */
export type StatusName = "offline" | "online" | "away" | "busy" | "invisible";

/** The statuses a user may choose (`SetStatus`, `Hello.status`). */
export type ChosenStatus = Exclude<StatusName, "offline">;

const toName: ReadonlyMap<Status, StatusName> = new Map([
  [Status.OFFLINE, "offline"],
  [Status.ONLINE, "online"],
  [Status.AWAY, "away"],
  [Status.BUSY, "busy"],
  [Status.INVISIBLE, "invisible"],
]);

const toEnum: ReadonlyMap<string, Status> = new Map([
  ["online", Status.ONLINE],
  ["away", Status.AWAY],
  ["busy", Status.BUSY],
  ["invisible", Status.INVISIBLE],
]);

/** The app-facing name of a wire status; an unknown or unspecified value reads as offline. */
export function statusName(status: Status): StatusName {
  return toName.get(status) ?? "offline";
}

/** The wire value of a status the user chooses; throws on anything that cannot be chosen. */
export function chosenStatus(name: string): Status {
  const status = toEnum.get(name);
  if (status === undefined) {
    throw new RangeError(
      `status must be one of online, away, busy, invisible (offline is derived), got ${JSON.stringify(name)}`,
    );
  }
  return status;
}
