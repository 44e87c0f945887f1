/**
 * An idle watchdog on Effect's `Clock`: it fails when one wait (marked with
 * `waiting`, or one pull of a stream marked with `stream`) has lasted `idle`
 * without completing. Time spent outside a wait does not count (a stream that
 * is not pulled because its consumer is slow is not idle).
 *
 * One watchdog fiber sleeps from the moment the watch is made until the
 * current wait's deadline, then checks again; it is registered before any wait
 * starts, so with a `TestClock` a single `adjust(idle)` made while a wait is
 * pending always fires it, whatever the phase of that wait.
 *
 * @internal
 */
import { Clock, Deferred, Duration, Effect, Exit, Fiber, Scope, Stream } from "effect"

/** A running watch (see the module docs). */
export interface IdleWatch<E> {
  /** Runs `effect` as one wait: fails with the idle error when it lasts `idle`. */
  readonly waiting: <A, E2, R>(effect: Effect.Effect<A, E2, R>) => Effect.Effect<A, E | E2, R>
  /** The stream with each pull timed as one wait. */
  readonly stream: <A, E2, R>(stream: Stream.Stream<A, E2, R>) => Stream.Stream<A, E | E2, R>
  /** Marks the start of a wait (the idle time counts from now). */
  readonly begin: Effect.Effect<void>
  /** Marks the end of a wait. */
  readonly end: Effect.Effect<void>
  /** Fails with the idle error once the watchdog fired (never succeeds). */
  readonly expired: Effect.Effect<never, E>
  /** Runs `effect` unless the watchdog fired (then fails with the idle error), racing it against the watchdog. */
  readonly orExpired: <A, E2, R>(effect: Effect.Effect<A, E2, R>) => Effect.Effect<A, E | E2, R>
  /**
   * Runs `effect` unless the watchdog already fired (then fails with the idle
   * error), without racing it: for an `effect` outside any wait.
   */
  readonly unlessExpired: <A, E2, R>(effect: Effect.Effect<A, E2, R>) => Effect.Effect<A, E | E2, R>
  /** Stops the watchdog (idempotent). */
  readonly stop: Effect.Effect<void>
}

/**
 * Starts a watch. The watchdog fiber is detached from the caller (it outlives
 * the effect that made it, e.g. while a stream returned by it is read) and
 * ends when `stop` runs or once it fired.
 */
export const make = <E>(idle: Duration.Input, onIdle: () => E): Effect.Effect<IdleWatch<E>> =>
  Effect.gen(function*() {
    const idleMillis = Duration.toMillis(Duration.fromInputUnsafe(idle))
    const expired = yield* Deferred.make<never, E>()
    /** When the current wait began; `undefined` outside a wait. */
    let since: number | undefined
    let fired = false

    const watchdog = Effect.gen(function*() {
      for (;;) {
        const now = yield* Clock.currentTimeMillis
        if (since !== undefined && now - since >= idleMillis) {
          fired = true
          yield* Deferred.done(expired, Exit.fail(onIdle()))
          return
        }
        yield* Effect.sleep(Duration.millis(since === undefined ? idleMillis : since + idleMillis - now))
      }
    })
    const fiber = yield* Effect.forkDetach(watchdog)

    // Once fired, every later wait fails at once (an element already at hand never wins over it).
    const orExpired = <A, E2, R>(effect: Effect.Effect<A, E2, R>): Effect.Effect<A, E | E2, R> =>
      Effect.suspend(() => fired ? Deferred.await(expired) : Effect.raceFirst(effect, Deferred.await(expired)))

    const unlessExpired = <A, E2, R>(effect: Effect.Effect<A, E2, R>): Effect.Effect<A, E | E2, R> =>
      Effect.suspend((): Effect.Effect<A, E | E2, R> => fired ? Deferred.await(expired) : effect)

    const waiting = <A, E2, R>(effect: Effect.Effect<A, E2, R>): Effect.Effect<A, E | E2, R> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        since = now
        return orExpired(effect).pipe(Effect.ensuring(Effect.sync(() => void (since = undefined))))
      })

    const stream = <A, E2, R>(self: Stream.Stream<A, E2, R>): Stream.Stream<A, E | E2, R> =>
      Stream.transformPull(self, (pull) => Effect.succeed(waiting(pull)))

    return {
      waiting,
      stream,
      begin: Effect.map(Clock.currentTimeMillis, (now) => void (since = now)),
      end: Effect.sync(() => void (since = undefined)),
      expired: Deferred.await(expired),
      orExpired,
      unlessExpired,
      stop: Fiber.interrupt(fiber)
    }
  })

/**
 * Times the consumer of a stream instead: the time from an element's emission
 * to the next pull (the consumer is busy with it, e.g. writing it to a client
 * that reads nothing). When one such gap lasts `idle`, `whenIdle` runs at once
 * and the stream fails with `onIdle()` at its next pull.
 */
export const consumer = <A, E, R, E2>(
  self: Stream.Stream<A, E, R>,
  idle: Duration.Input,
  onIdle: () => E2,
  whenIdle: Effect.Effect<void>
): Stream.Stream<A, E | E2, R> =>
  Stream.transformPull(self, (pull, scope) =>
    Effect.gen(function*() {
      const watch = yield* make(idle, onIdle)
      yield* Scope.addFinalizer(scope, watch.stop)
      yield* Effect.forkIn(Effect.andThen(Effect.exit(watch.expired), whenIdle), scope)
      // A pull is not timed (`end` before it), so the watchdog cannot fire during one: a check of
      // whether it fired before, instead of a race (a fiber) per pull.
      return Effect.andThen(watch.end, watch.unlessExpired(pull)).pipe(Effect.tap(() => watch.begin))
    }))
