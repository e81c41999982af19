/**
 * Session pins: a session (its `X-Router-Session-Id`, see `sessionKeyOf`) pinned to one provider
 * through `POST /admin/override`, which the policy then tries first. The pins are kept in memory
 * for the request path and, in the daemon, stored in SQLite so they survive a restart.
 */
import { Context, Effect, Layer } from "effect"
import { ConfigRepo, type SessionPin } from "../persistence/ConfigRepo.js"

export interface SessionsService {
  /** The provider this session is pinned to, or `null` (also for no session): a map lookup, for the request path. */
  readonly pinOf: (sessionKey: string | null) => string | null
  /**
   * Pins a session to a provider, or removes its pin (`null`). The provider id is not checked
   * here: callers check it against the configured providers, and the policy skips ids it does not know.
   */
  readonly set: (sessionKey: string, providerId: string | null) => Effect.Effect<void>
}

export class Sessions extends Context.Tag("sanctum/Sessions")<Sessions, SessionsService>() {}

/** Pins held in a map, written through to `store` first. */
export const make = (initial: Iterable<SessionPin>, store: (sessionKey: string, providerId: string | null) => Effect.Effect<void>) =>
  Effect.map(Effect.makeSemaphore(1), (lock) => {
    const pins = new Map<string, string>()
    for (const p of initial) pins.set(p.sessionKey, p.providerId)
    return Sessions.of({
      pinOf: (sessionKey) => (sessionKey === null ? null : pins.get(sessionKey) ?? null),
      // One writer at a time and uninterruptible, so the map and the table cannot disagree about
      // which of two concurrent changes to one session came last.
      set: (sessionKey, providerId) =>
        lock.withPermits(1)(Effect.uninterruptible(Effect.zipRight(
          store(sessionKey, providerId),
          Effect.sync(() => {
            if (providerId === null) pins.delete(sessionKey)
            else pins.set(sessionKey, providerId)
          })
        )))
    })
  })

/** Pins loaded from and stored in the database (`session_overrides`). */
export const layer: Layer.Layer<Sessions, never, ConfigRepo> = Layer.effect(
  Sessions,
  Effect.gen(function* () {
    const repo = yield* ConfigRepo
    return yield* make(yield* repo.listSessionPins, repo.setSessionPin)
  })
)

/** Pins in memory only, lost on exit: for library users without a database, and tests. */
export const layerMemory: Layer.Layer<Sessions> = Layer.effect(Sessions, make([], () => Effect.void))
