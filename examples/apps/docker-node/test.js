'use strict';
// Starts the app on a free port and asks it once: proves the installed
// dependencies load and answer (the Dockerfile's build stage runs it).
const assert = require('assert');
const http = require('http');
const app = require('./server');

const srv = app.listen(0, '127.0.0.1', () => {
  http.get({ host: '127.0.0.1', port: srv.address().port, path: '/?name=test' }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => {
      assert.strictEqual(res.statusCode, 200);
      assert.match(body, /^hello from a Dockerfile, test \(express 4\./);
      console.log('1 test passed');
      srv.close();
    });
  });
});
