import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const src = (path: string) => fileURLToPath(new URL(`../../src/${path}`, import.meta.url));

// The example imports the package by name, as an app would; here the names point at its source.
export default defineConfig({
  base: "./",
  plugins: [react()],
  resolve: {
    alias: [
      { find: "@taskcast/client/react", replacement: src("react.tsx") },
      { find: "@taskcast/client", replacement: src("index.ts") },
    ],
  },
  build: { outDir: "dist", emptyOutDir: true },
});
