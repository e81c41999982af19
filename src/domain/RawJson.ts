/**
 * Edits to the top-level members of a JSON object, made on its bytes. Parsing and serializing
 * again would change what the client wrote: `JSON.stringify` turns a `seed` of 9007199254740993
 * into 9007199254740992, `1.0` into `1` and `1e400` into `null`, and rewrites escapes. Here only the
 * members named change; every other byte (other members, whitespace, number literals, escapes,
 * bytes that are not UTF-8) stays as it was.
 *
 * The scan is iterative (a body may nest 100,000 levels deep) and linear in the body's size; it
 * crosses strings, most of a body, with `indexOf`.
 */

/** What happens to one top-level member. */
export type MemberEdit =
  /** Its value becomes this JSON text wherever the member occurs; added when absent. */
  | { readonly _tag: "Set"; readonly json: string }
  /** Added with this JSON text when absent; otherwise left as it is. */
  | { readonly _tag: "Default"; readonly json: string }
  /** Every occurrence goes. */
  | { readonly _tag: "Remove" }

export const set = (json: string): MemberEdit => ({ _tag: "Set", json })
export const orDefault = (json: string): MemberEdit => ({ _tag: "Default", json })
export const remove: MemberEdit = { _tag: "Remove" }

/** One member of the top-level object, as offsets into the body. */
interface Member {
  readonly key: string
  readonly keyStart: number
  readonly valueStart: number
  readonly valueEnd: number
}

/** The top-level object's members, and where its text starts and ends. */
interface Scanned {
  /** Just after `{` and the whitespace that follows it. */
  readonly bodyStart: number
  /** Where the closing `}` is. */
  readonly close: number
  readonly members: ReadonlyArray<Member>
}

const quote = 0x22
const backslash = 0x5c
const comma = 0x2c
const colon = 0x3a
const openBrace = 0x7b
const closeBrace = 0x7d
const openBracket = 0x5b
const closeBracket = 0x5d

/** JSON's whitespace: space, line feed, carriage return, tab. */
export const isWhitespace = (c: number | undefined) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

const skipWhitespace = (b: Buffer, i: number): number => {
  while (isWhitespace(b[i])) i++
  return i
}

/**
 * The index just after the string whose opening quote is at `i`, or -1. Strings are most of a
 * body's bytes, so each is crossed with `indexOf` (memchr) from quote to quote; a quote ends the
 * string unless an odd run of backslashes precedes it.
 */
const stringEnd = (b: Buffer, i: number): number => {
  // Short strings (keys, roles) end sooner than a call to `indexOf` takes.
  const near = Math.min(b.length, i + 33)
  for (let j = i + 1; j < near; j++) {
    const x = b[j]
    if (x === quote) return j + 1
    if (x === backslash) break
  }
  let from = i + 1
  for (;;) {
    const q = b.indexOf(quote, from)
    if (q === -1) return -1
    let k = q - 1
    while (b[k] === backslash) k--
    if ((q - 1 - k) % 2 === 0) return q + 1
    from = q + 1
  }
}

/** The index just after the value that starts at `i`, or -1; nesting is counted, not recursed into. */
const valueEnd = (b: Buffer, i: number): number => {
  const c = b[i]
  if (c === quote) return stringEnd(b, i)
  if (c !== openBrace && c !== openBracket) {
    // A number, `true`, `false` or `null`: up to a separator or whitespace.
    let j = i
    for (let x = b[j]; x !== undefined && x !== comma && x !== closeBrace && x !== closeBracket && !isWhitespace(x); x = b[++j]);
    return j
  }
  let depth = 0
  for (let j = i; j < b.length; j++) {
    const x = b[j]
    if (x === quote) {
      const end = stringEnd(b, j)
      if (end === -1) return -1
      j = end - 1
    } else if (x === openBrace || x === openBracket) depth++
    else if ((x === closeBrace || x === closeBracket) && --depth === 0) return j + 1
  }
  return -1
}

/** A key as JSON.parse reads it: most keys are plain ASCII, their bytes as they stand. */
const keyOf = (b: Buffer, start: number, end: number): string => {
  // Built here rather than by `toString`, whose call costs more than a short key's few characters.
  let key = ""
  for (let j = start + 1; j < end - 1; j++) {
    const x = b[j]!
    if (x >= 0x80 || x === backslash) return JSON.parse(b.toString("utf8", start, end)) as string
    key += String.fromCharCode(x)
  }
  return key
}

/** The members of the JSON object in `b`, or `null`. */
const scan = (b: Buffer): Scanned | null => {
  let i = skipWhitespace(b, 0)
  if (b[i] !== openBrace) return null
  const bodyStart = skipWhitespace(b, i + 1)
  const members: Array<Member> = []
  i = bodyStart
  if (b[i] === closeBrace) return { bodyStart, close: i, members }
  for (;;) {
    if (b[i] !== quote) return null
    const keyEnd = stringEnd(b, i)
    if (keyEnd === -1) return null
    const afterKey = skipWhitespace(b, keyEnd)
    if (b[afterKey] !== colon) return null
    const valueStart = skipWhitespace(b, afterKey + 1)
    const end = valueEnd(b, valueStart)
    if (end === -1 || end === valueStart) return null
    members.push({ key: keyOf(b, i, keyEnd), keyStart: i, valueStart, valueEnd: end })
    const next = skipWhitespace(b, end)
    if (b[next] === closeBrace) return { bodyStart, close: next, members }
    if (b[next] !== comma) return null
    i = skipWhitespace(b, next + 1)
  }
}

/**
 * `bytes`, a JSON object, with `edits` made to its top-level members; every other byte is kept.
 * Members added (an edit for an absent key that adds) come first, in `edits`' order. With duplicate
 * keys every occurrence is set or removed, so the result means the same to a parser that keeps the
 * last (as `JSON.parse` does) and to one that keeps the first. `null` when `bytes` is not a JSON
 * object.
 */
export const editMembers = (bytes: Uint8Array, edits: Readonly<Record<string, MemberEdit>>): Uint8Array | null => {
  // Read as bytes, never decoded: JSON's syntax is ASCII, and no byte of a multi-byte UTF-8
  // character is, so bytes that are not UTF-8 are carried through like any other.
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const scanned = scan(b)
  if (scanned === null) return null
  const { bodyStart, close, members } = scanned
  const slice = (from: number, to: number) => b.subarray(from, to)
  const text = (t: string) => Buffer.from(t, "utf8")

  const present = new Set<string>()
  for (const m of members) present.add(m.key)
  const added: Array<string> = []
  for (const key of Object.keys(edits)) {
    const e = edits[key]!
    if (e._tag !== "Remove" && !present.has(key)) added.push(`${JSON.stringify(key)}:${e.json}`)
  }

  const out: Array<Uint8Array> = [slice(0, bodyStart)]
  if (added.length > 0) out.push(text(added.join(",")))
  // The last member kept (its index): the separator after it is written only once another follows.
  let last = -1
  for (let k = 0; k < members.length; k++) {
    const m = members[k]!
    const e = Object.hasOwn(edits, m.key) ? edits[m.key]! : null
    if (e?._tag === "Remove") continue
    if (last !== -1) out.push(slice(members[last]!.valueEnd, members[last + 1]!.keyStart))
    else if (added.length > 0) out.push(text(","))
    out.push(slice(m.keyStart, m.valueStart))
    out.push(e?._tag === "Set" ? text(e.json) : slice(m.valueStart, m.valueEnd))
    last = k
  }
  // The whitespace before `}` is the original last member's.
  const tail = members.length === 0 ? close : members[members.length - 1]!.valueEnd
  out.push(slice(tail, bytes.byteLength))
  return Buffer.concat(out)
}

