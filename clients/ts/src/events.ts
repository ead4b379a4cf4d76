/** A minimal typed event emitter (no dependency, works everywhere). */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<(ev: never) => void>>();

  /** Calls `fn` on every `event`; returns a function that unsubscribes. */
  on<K extends keyof Events>(event: K, fn: (ev: Events[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(fn as (ev: never) => void);
    return () => this.off(event, fn);
  }

  /** Calls `fn` on the next `event` only. */
  once<K extends keyof Events>(event: K, fn: (ev: Events[K]) => void): () => void {
    const off = this.on(event, (ev) => {
      off();
      fn(ev);
    });
    return off;
  }

  /** Removes `fn` from `event`. */
  off<K extends keyof Events>(event: K, fn: (ev: Events[K]) => void): void {
    this.listeners.get(event)?.delete(fn as (ev: never) => void);
  }

  /** A promise of the next `event` (optionally the next one for which `pred` holds). */
  next<K extends keyof Events>(event: K, pred: (ev: Events[K]) => boolean = () => true): Promise<Events[K]> {
    return new Promise((resolve) => {
      const off = this.on(event, (ev) => {
        if (pred(ev)) {
          off();
          resolve(ev);
        }
      });
    });
  }

  /** Calls every listener of `event`; a throwing listener does not stop the others. */
  protected emit<K extends keyof Events>(event: K, ev: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        (fn as (ev: Events[K]) => void)(ev);
      } catch (e) {
        report(e);
      }
    }
  }
}

function report(e: unknown): void {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (typeof g.reportError === "function") g.reportError(e);
  else console.error("edk-ws-client: a listener threw", e);
}
