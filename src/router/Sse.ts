/**
 * A light framer for server-sent events over Node buffers: it forwards whole events only, holding
 * back a partial one until its blank line arrives. When an upstream dies mid-event, the client then
 * never receives half an event followed by the router's error event.
 */
import type { ChunkWriter } from "../providers/Upstream.js"
import { errorWord as ERROR, inBandError } from "./Classify.js"

/** Past this, held-back bytes are forwarded anyway: the body is evidently not SSE. */
export const maxHeldBack = 1024 * 1024

const LF = 0x0a
const CR = 0x0d

/**
 * The offset just past the last event boundary, or -1 when there is none. An event ends at a blank
 * line, and SSE lets a line end in `\r\n`, `\n` or a bare `\r` (some servers use the last), so a
 * boundary is any line ending that directly follows another. A `\r` that ends the buffer after a
 * `\n` may be the first half of a `\r\n` still to come, so it waits for the next byte; `\r\r` at
 * the end cannot begin anything but another line and counts at once.
 */
export const lastEventEnd = (buf: Uint8Array): number => {
  for (let i = buf.length - 1; i > 0; i--) {
    const c = buf[i]
    if (c === LF) {
      const before = buf[i - 1]
      if (before === LF) return i + 1
      if (before === CR && i > 1 && (buf[i - 2] === LF || buf[i - 2] === CR)) return i + 1
    } else if (c === CR && buf[i + 1] !== LF) {
      const before = buf[i - 1]
      if (before === CR || (before === LF && i + 1 < buf.length)) return i + 1
    }
  }
  return -1
}

/**
 * The start of a stream, held until its commit point: the chunks as they came (joined once, when
 * they are passed on) and the whole events not judged yet. Each chunk is looked at once, so a long
 * preamble, or one large first event arriving in many chunks, costs time in proportion to its size.
 */
export class HeldStart {
  private readonly chunks: Array<Uint8Array> = []
  /** Bytes held. */
  size = 0
  /** Bytes of whole events handed out for judging. */
  judged = 0
  /** What follows the last whole event handed out: an event still arriving. */
  private rest: Array<Uint8Array> = []
  private restSize = 0
  /** The last bytes seen, for a boundary split across chunks. */
  private tail: Uint8Array = new Uint8Array(0)

  /** Holds a chunk; returns the whole events it completed, or null when it completed none. */
  add(chunk: Uint8Array): Uint8Array | null {
    this.chunks.push(chunk)
    this.size += chunk.byteLength
    this.rest.push(chunk)
    this.restSize += chunk.byteLength
    const tail = this.tail
    const window = tail.byteLength === 0 ? chunk : Buffer.concat([tail, chunk])
    this.tail = Buffer.from(window.subarray(Math.max(0, window.byteLength - 3)))
    const end = lastEventEnd(window)
    // A boundary inside the tail alone was found with the chunk before.
    if (end === -1 || end < tail.byteLength) return null
    const whole = this.restSize - (window.byteLength - end)
    if (whole <= 0) return null
    const all = this.rest.length === 1 ? this.rest[0]! : Buffer.concat(this.rest, this.restSize)
    this.restSize -= whole
    this.rest = this.restSize === 0 ? [] : [all.subarray(whole)]
    this.judged += whole
    return all.subarray(0, whole)
  }

  /**
   * Whether the event still arriving begins like one (a field: `data:`, `event:`, `id:`, `retry:`,
   * or a `:` comment). A large event is held to its end; bytes that begin like none are not SSE.
   */
  arrivingLooksLikeEvent(): boolean {
    const start = Buffer.concat(this.rest.slice(0, 8).map((c) => c.subarray(0, 8))).toString("latin1", 0, 8)
    return /^(data|event|id|retry)?:/.test(start.replace(/^[\r\n]+/, ""))
  }

  /** Everything held, in one piece. */
  bytes(): Uint8Array {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size)
  }
}

/** An event stream's text with every line ending made `\n`, for reading its events. */
export const normalizeLines = (text: string): string => (text.includes("\r") ? text.replace(/\r\n?/g, "\n") : text)

/** The data of one event (its `data:` lines, joined by `\n`), from its text with `\n` line endings. */
export const dataOf = (event: string): string =>
  event
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
    .join("\n")

export interface FramedWriter extends ChunkWriter {
  /** Forwards whatever is held back (at a clean end of the body). */
  readonly flush: () => void
  /** What is held back: the start of an event whose blank line has not come. */
  readonly pending: () => Uint8Array | null
}

export const framed = (writer: ChunkWriter): FramedWriter => {
  let held: Buffer | null = null
  return {
    onDrain: writer.onDrain,
    write: (chunk) => {
      const buf: Uint8Array = held === null ? chunk : Buffer.concat([held, chunk])
      const end = lastEventEnd(buf)
      if (end === -1 && buf.length < maxHeldBack) {
        held = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
        return true
      }
      const cut = end === -1 ? buf.length : end
      held = cut === buf.length ? null : Buffer.from(buf.buffer, buf.byteOffset + cut, buf.byteLength - cut)
      return writer.write(cut === buf.length ? buf : buf.subarray(0, cut))
    },
    flush: () => {
      if (held !== null) {
        writer.write(held)
        held = null
      }
    },
    pending: () => held
  }
}

/** What whole events say about how their stream ends. */
export interface EventsSeen {
  /** Choices these events finish (a `finish_reason` that is not `null`) before any error event or `[DONE]`. */
  readonly finishes: number
  /** Where the first `[DONE]` event ends, or -1: nothing after it belongs to the answer. */
  readonly doneEnd: number
  /** An error event before any `[DONE]`: where it begins (only what precedes it is passed on) and what it says. */
  readonly error: { readonly at: number; readonly message: string } | null
}

/** The most of one event still arriving that a stream's start holds: an image, a whole answer in one event. */
export const maxHeldEvent = 32 * 1024 * 1024

const DONE = Buffer.from("[DONE]")
const FINISH = Buffer.from('"finish_reason"')

/**
 * Reads whole events (as `framed` passes them on) for the end of an answer: `[DONE]`, finishes, or
 * an error event. `null` for the common chunk that has none. Byte searches, not a parse of every
 * event: a key's quotes appear unescaped only as a key, never inside a string, so only an event
 * that names `"error":` as a key is parsed.
 */
export const scanEvents = (chunk: Uint8Array): EventsSeen | null => {
  const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  const doneEnd = doneEventEnd(buf)
  let error = errorEvent(doneEnd === -1 ? buf : buf.subarray(0, doneEnd))
  let answer = error !== null ? buf.subarray(0, error.at) : doneEnd !== -1 ? buf.subarray(0, doneEnd) : buf
  let finishes = finishesIn(answer)
  // A choice that finished with "error" and no `error` object beside it: an error event all the same.
  if (finishes > 0 && error === null) {
    const at = errorFinishAt(answer)
    if (at !== -1) {
      error = { at, message: 'finish_reason "error"' }
      answer = buf.subarray(0, at)
      finishes = finishesIn(answer)
    }
  }
  return finishes > 0 || doneEnd !== -1 || error !== null ? { finishes, doneEnd: error === null ? doneEnd : -1, error } : null
}

/** The offset just past a `"key"` followed by `:` (blanks allowed), or -1. */
const keyAt = (buf: Buffer, key: Buffer, from: number): number => {
  for (let i = buf.indexOf(key, from); i !== -1; i = buf.indexOf(key, i + 1)) {
    let j = i + key.length
    while (buf[j] === 0x20) j++
    if (buf[j] === 0x3a) return j + 1
  }
  return -1
}

const isLineStart = (buf: Buffer, i: number) => i === 0 || buf[i - 1] === LF || buf[i - 1] === CR

/** Where the event of the first `[DONE]` data line ends, or -1. */
const doneEventEnd = (buf: Buffer): number => {
  for (let i = buf.indexOf(DONE); i !== -1; i = buf.indexOf(DONE, i + 1)) {
    const j = buf[i - 1] === 0x20 ? i - 1 : i
    if (j >= 5 && buf.toString("latin1", j - 5, j) === "data:" && isLineStart(buf, j - 5)) return nextEventEnd(buf, i)
  }
  return -1
}

/** The offset just past the first blank line at or after `from` (the end of that event), or the end. */
const nextEventEnd = (buf: Buffer, from: number): number => {
  for (let k = from; k < buf.length; k++) {
    const c = buf[k]
    if (c !== LF && c !== CR) continue
    const next = c === CR && buf[k + 1] === LF ? k + 2 : k + 1
    const d = buf[next]
    if (d === LF) return next + 1
    if (d === CR) return buf[next + 1] === LF ? next + 2 : next + 1
    k = next - 1
  }
  return buf.length
}

/** How many `"finish_reason"`s have a string value (not `null`). */
const finishesIn = (buf: Buffer): number => {
  let n = 0
  for (let at = keyAt(buf, FINISH, 0); at !== -1; at = keyAt(buf, FINISH, at)) {
    while (buf[at] === 0x20) at++
    if (buf[at] === 0x22) n++
  }
  return n
}

/** Where the event of the first `"finish_reason": "error"` begins, or -1. */
const errorFinishAt = (buf: Buffer): number => {
  for (let at = keyAt(buf, FINISH, 0); at !== -1; at = keyAt(buf, FINISH, at)) {
    while (buf[at] === 0x20) at++
    const end = at + ERROR.length
    if (end <= buf.length && buf.compare(ERROR, 0, ERROR.length, at, end) === 0) return Math.max(0, lastEventEnd(buf.subarray(0, at)))
  }
  return -1
}

const errorEvent = (buf: Buffer): EventsSeen["error"] => {
  for (let at = keyAt(buf, ERROR, 0); at !== -1; at = keyAt(buf, ERROR, at)) {
    const start = Math.max(0, lastEventEnd(buf.subarray(0, at)))
    const data = dataOf(normalizeLines(buf.toString("utf8", start)).split("\n\n")[0]!)
    try {
      const error = inBandError(JSON.parse(data))
      if (error !== undefined) return { at: start, message: errorMessage(error) }
    } catch {
      // Not an event of JSON: not an error event either.
    }
  }
  return null
}

const errorMessage = (error: unknown): string => {
  const m = typeof error === "string"
    ? error
    : typeof error === "object" && error !== null && typeof (error as { message?: unknown }).message === "string"
    ? (error as { message: string }).message
    : jsonOrNull(error) ?? "an error nested too deeply to quote"
  return m.length > 500 ? `${m.slice(0, 500)}…` : m
}

/** An upstream's value as JSON text, or `null` for one nested deeper than `JSON.stringify` goes. */
export const jsonOrNull = (v: unknown): string | null => {
  try {
    return JSON.stringify(v)
  } catch {
    return null
  }
}
