'use strict';
// Copies the runtime files into dist/ with a trimmed package.json.
const fs = require('fs');
fs.mkdirSync('dist', { recursive: true });
for (const f of ['server.js', 'greet.js']) fs.copyFileSync(f, `dist/${f}`);
const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
fs.writeFileSync('dist/package.json', JSON.stringify({ name: pkg.name, version: pkg.version, main: 'server.js' }, null, 2) + '\n');
console.log('built', fs.readdirSync('dist').length, 'files');
