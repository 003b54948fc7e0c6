// ESLint's settings for the scripts inlined into the HTML pages (src/convscope/presentation/templates/*.js):
// the recommended rules, browser globals, classic scripts (not modules). `make test` installs ESLint into
// .venv/js and this file finds its packages there through NODE_PATH. CommonJS, not ESM: NODE_PATH applies to
// require() only, and every Node that ESLint 9 runs on (Debian's 18 included) reads a .js file as CommonJS.
"use strict";

const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  js.configs.recommended,
  {
    files: ["src/convscope/presentation/templates/**/*.js"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "script",
      globals: globals.browser,
    },
  },
];
