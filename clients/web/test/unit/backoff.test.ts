// Backoff: jitter stays within [ceiling/2, ceiling], the ceiling doubles up to the cap, and a
// healthy session resets it. Time and randomness are passed in.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Backoff } from "../../src/backoff.js";

test("the ceiling grows by the factor and stops at the cap", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, factor: 2 });
  const ceilings: number[] = [];
  for (let i = 0; i < 8; i++) {
    ceilings.push(b.ceilingMs());
    b.next(() => 0.5);
  }
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
});

test("jitter bounds: random 0 gives half the ceiling, random near 1 the ceiling", () => {
  for (const [r, expected] of [
    [0, 50],
    [0.5, 75],
    [0.999999, 100],
  ] as const) {
    const b = new Backoff({ initialMs: 100, maxMs: 1000 });
    assert.equal(b.next(() => r), expected);
  }
});

test("every delay stays within [ceiling/2, ceiling] and never exceeds the cap", () => {
  const b = new Backoff({ initialMs: 250, maxMs: 8000 });
  for (let i = 0; i < 50; i++) {
    const ceiling = b.ceilingMs();
    const d = b.next(Math.random);
    assert.ok(d >= ceiling / 2 && d <= ceiling, `${d} in [${ceiling / 2}, ${ceiling}]`);
    assert.ok(d <= 8000);
  }
});

test("a random source out of range is clamped", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 100 });
  assert.equal(b.next(() => -3), 50);
  assert.equal(b.next(() => 7), 100);
});

test("a session that lasted healthyAfterMs resets the backoff", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 10_000, healthyAfterMs: 5000 });
  b.next(() => 0);
  b.next(() => 0);
  b.next(() => 0);
  assert.equal(b.ceilingMs(), 800);
  b.opened(1000);
  b.closed(5999); // 4999 ms: not healthy
  assert.equal(b.ceilingMs(), 800);
  b.opened(10_000);
  b.closed(15_000); // 5000 ms: healthy
  assert.equal(b.attempt, 0);
  assert.equal(b.ceilingMs(), 100);
});

test("a close without an open session does not reset", () => {
  const b = new Backoff({ initialMs: 100 });
  b.next(() => 0);
  b.closed(1_000_000);
  assert.equal(b.attempt, 1);
});

test("bad settings are refused", () => {
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 100, maxMs: 50 }), RangeError);
  assert.throws(() => new Backoff({ factor: 0.5 }), RangeError);
});
