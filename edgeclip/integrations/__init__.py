"""edgeclip inside other tools' own extension points, in-process (no server): each module imports its tool's
package, which edgeclip never depends on; `import edgeclip.integrations.lancedb` registers the "edgeclip"
embedding function with LanceDB, `edgeclip.integrations.chroma` does so with Chroma."""
