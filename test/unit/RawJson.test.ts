import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { editMembers, type MemberEdit, orDefault, remove, set } from "../../src/domain/RawJson.js"

const bytes = (text: string) => new Uint8Array(Buffer.from(text, "utf8"))
const edit = (text: string, edits: Record<string, MemberEdit>): string | null => {
  const out = editMembers(bytes(text), edits)
  return out === null ? null : Buffer.from(out).toString("utf8")
}

// JSON text written the ways clients write it, which JSON.stringify would not reproduce: spacing,
// number literals it changes, escapes, and structural characters inside strings.
const ws = fc.constantFrom("", " ", "\n  ", "\t", "\r\n ")
const numberText = fc.oneof(
  fc.constantFrom("0", "-0", "1.0", "1e400", "-1e400", "9007199254740993", "1E-7", "12.50", "-3", "0.1e+2"),
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map(String)
)
const stringText = fc.array(
  fc.constantFrom('\\"', "\\\\", "\\/", "\\n", "\\u00e9", "\\ud83d\\ude00", "é", "😀", "a", " ", "{", "}", "[", "]", ",", ":", "\\\\\\\""),
  { maxLength: 6 }
).map((parts) => `"${parts.join("")}"`)
const primitiveText = fc.oneof(numberText, stringText, fc.constantFrom("true", "false", "null"))

const { value: valueText } = fc.letrec<{ value: string; array: string; object: string }>((tie) => ({
  value: fc.oneof({ maxDepth: 3, depthSize: "small" }, primitiveText, tie("array"), tie("object")),
  array: fc.tuple(ws, fc.array(fc.tuple(ws, tie("value"), ws), { maxLength: 4 })).map(([w, items]) =>
    `[${items.length === 0 ? w : items.map(([a, v, b]) => `${a}${v}${b}`).join(",")}]`
  ),
  object: fc.tuple(ws, fc.array(fc.tuple(ws, stringText, ws, ws, tie("value"), ws), { maxLength: 4 })).map(([w, members]) =>
    `{${members.length === 0 ? w : members.map(([a, k, b, c, v, d]) => `${a}${k}${b}:${c}${v}${d}`).join(",")}}`
  )
}))

// Keys the edits name and keys they do not, some written with escapes, so duplicates are common.
const keyText = fc.constantFrom('"model"', '"m\\u006fdel"', '"provider"', '"models"', '"max_tokens"', '"a"', '"b"', '"é"', '"\\u00e9"', '"x\\"y"')
const memberArb = fc.record({ before: ws, key: keyText, beforeColon: ws, afterColon: ws, value: valueText, after: ws })
type MemberText = typeof memberArb extends fc.Arbitrary<infer A> ? A : never
const memberText = (m: MemberText) => `${m.key}${m.beforeColon}:${m.afterColon}${m.value}`

const documentArb = fc.record({ lead: ws, members: fc.array(memberArb, { maxLength: 8 }), empty: ws, trail: ws }).map((d) => ({
  ...d,
  text: `${d.lead}{${d.members.length === 0 ? d.empty : d.members.map((m) => `${m.before}${memberText(m)}${m.after}`).join(",")}}${d.trail}`
}))

const editArb: fc.Arbitrary<MemberEdit> = fc.oneof(valueText.map(set), valueText.map(orDefault), fc.constant(remove))
const editsArb = fc.dictionary(fc.constantFrom("model", "provider", "models", "max_tokens", "é", "x\"y", "new"), editArb, { maxKeys: 4 })

/** What the edits mean, applied to the parsed object. */
const expected = (text: string, edits: Record<string, MemberEdit>) => {
  const object = JSON.parse(text) as Record<string, unknown>
  for (const [key, e] of Object.entries(edits)) {
    if (e._tag === "Remove") delete object[key]
    else if (e._tag === "Set" || !Object.hasOwn(object, key)) object[key] = JSON.parse(e.json)
  }
  return object
}

describe("editMembers", () => {
  it("means what the edits say, for random objects and random edits", () => {
    fc.assert(
      fc.property(documentArb, editsArb, (doc, edits) => {
        const out = edit(doc.text, edits)
        expect(out).not.toBeNull()
        expect(JSON.parse(out!)).toEqual(expected(doc.text, edits))
      }),
      { numRuns: 2000 }
    )
  })

  it("keeps the text of every member it does not edit byte for byte, in order", () => {
    fc.assert(
      fc.property(documentArb, editsArb, (doc, edits) => {
        const out = edit(doc.text, edits)!
        let from = 0
        for (const m of doc.members) {
          if (Object.hasOwn(edits, JSON.parse(m.key) as string)) continue
          const at = out.indexOf(memberText(m), from)
          expect(at, memberText(m)).toBeGreaterThanOrEqual(0)
          from = at + memberText(m).length
        }
      }),
      { numRuns: 2000 }
    )
  })

  it("changes nothing when no edit applies", () => {
    fc.assert(
      fc.property(documentArb, (doc) => {
        expect(edit(doc.text, {})).toBe(doc.text)
        expect(edit(doc.text, { absent: remove })).toBe(doc.text)
      })
    )
  })

  it("sets and removes every occurrence of a duplicated key, so first-wins and last-wins parsers agree", () => {
    const out = edit(`{"model":"a","m\\u006fdel":"b","provider":{},"x":1,"provider":[],"model" : "c"}`, { model: set(`"z"`), provider: remove })
    expect(out).toBe(`{"model":"z","m\\u006fdel":"z","x":1,"model" : "z"}`)
  })

  it("adds an absent member first; a default leaves a present one as it is", () => {
    expect(edit(`{ "messages": [] }`, { model: set(`"m"`) })).toBe(`{ "model":"m","messages": [] }`)
    expect(edit(`{"model":"m\\u0031","models":["m1"]}`, { model: orDefault(`"m1"`), models: remove })).toBe(`{"model":"m\\u0031"}`)
    expect(edit(`{"models":["m1"]}`, { model: orDefault(`"m1"`), models: remove })).toBe(`{"model":"m1"}`)
    expect(edit(`{}`, { model: set(`"m"`) })).toBe(`{"model":"m"}`)
  })

  it("removes the last members without leaving a comma", () => {
    expect(edit(`{"a":1, "provider":{}, "models":[] \n}`, { provider: remove, models: remove })).toBe(`{"a":1 \n}`)
    expect(edit(`{"provider":{}, "a":1}`, { provider: remove })).toBe(`{"a":1}`)
    expect(edit(`{ "provider":{} }`, { provider: remove })).toBe(`{  }`)
  })

  it("keeps bytes that are not UTF-8", () => {
    const raw = Buffer.concat([Buffer.from(`{"model":"a","content":"`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(`"}`)])
    const out = Buffer.from(editMembers(raw, { model: set(`"b"`) })!)
    expect(out).toEqual(Buffer.concat([Buffer.from(`{"model":"b","content":"`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(`"}`)]))
  })

  it("walks a value nested 100,000 deep without recursing", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000)
    expect(edit(`{"model":"a","tools":${deep},"provider":{"order":${deep}}}`, { model: set(`"b"`), provider: remove }))
      .toBe(`{"model":"b","tools":${deep}}`)
  })

  it("is null for what is not a JSON object", () => {
    for (const text of ["[]", "1", `"{}"`, "", `{"a"}`, `{"a":1`, `{"a":"1}`]) expect(edit(text, { a: remove }), text).toBeNull()
  })
})
