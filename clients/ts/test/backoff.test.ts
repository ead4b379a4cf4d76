import { describe, expect, test } from "vitest";

import { backoffDelay } from "../src/index.js";

describe("backoff with full jitter", () => {
  const o = { initialDelayMs: 100, maxDelayMs: 1_000 };

  test("the ceiling doubles per failure and is capped", () => {
    // random() just under 1 gives the ceiling (minus one ms).
    const top = () => 0.999_999;
    expect([0, 1, 2, 3, 4, 5, 40].map((f) => backoffDelay(f, o, top))).toEqual([99, 199, 399, 799, 999, 999, 999]);
  });

  test("the delay is uniformly spread from zero (full jitter)", () => {
    expect(backoffDelay(3, o, () => 0)).toBe(0);
    expect(backoffDelay(3, o, () => 0.5)).toBe(400);
    const seen = Array.from({ length: 200 }, () => backoffDelay(2, o));
    expect(Math.min(...seen)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...seen)).toBeLessThan(400);
    expect(new Set(seen).size).toBeGreaterThan(20);
  });
});
