/**
 * The README's "Use as a library" example, compiled and run as a user would: imported by the
 * package's own name, type-checked with the project's compiler settings, executed with Node.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import ts from "typescript"
import { afterAll, describe, expect, it } from "vitest"

const root = join(import.meta.dirname, "..", "..")

const example = (): string => {
  const readme = readFileSync(join(root, "README.md"), "utf8")
  const section = readme.split("## Use as a library")[1]
  const block = section?.match(/```ts\n([\s\S]*?)```/)?.[1]
  if (block === undefined) throw new Error("README has no ts block under 'Use as a library'")
  return block
}

describe("README library example", () => {
  // Inside the package, so `import … from "sanctum-router"` resolves to this package (self-reference).
  const dir = mkdtempSync(join(root, "test", ".readme-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("type-checks", () => {
    writeFileSync(join(dir, "example.ts"), example())
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
      extends: "../../tsconfig.json",
      compilerOptions: { noEmit: true, rootDir: ".", declaration: false, plugins: [] },
      include: ["example.ts"]
    }))
    const run = () => execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", dir], { encoding: "utf8" })
    expect(run).not.toThrow()
  })

  it("runs and fails over as its comment says", () => {
    const js = ts.transpileModule(example(), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }
    }).outputText
    writeFileSync(join(dir, "example.mjs"), js)
    const out = execFileSync(process.execPath, [join(dir, "example.mjs")], { encoding: "utf8", timeout: 20_000 })
    expect(out).toContain("steady flaky:server_error,steady:ok")
    expect(out).toContain("Hello from steady!")
  })

  // What the README says below the example: a CommonJS app can `require` both entry points.
  it("loads with require() from a CommonJS app, both entry points", () => {
    writeFileSync(join(dir, "example.cjs"), [
      `const { Router, Providers, FakeUpstream } = require("sanctum-router")`,
      `const { startFakeServer } = require("sanctum-router/testing")`,
      `console.log(typeof Router.layer, typeof Providers.layerStatic, typeof FakeUpstream.layer, typeof startFakeServer)`
    ].join("\n"))
    const out = execFileSync(process.execPath, ["--no-warnings", join(dir, "example.cjs")], { encoding: "utf8", timeout: 20_000 })
    expect(out.trim()).toBe("object function function function")
  })
})
