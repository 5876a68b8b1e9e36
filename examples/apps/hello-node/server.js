'use strict';
const http = require('http');
const { greet } = require('./greet');

const port = Number(process.env.PORT || 3000);
http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(greet(new URL(req.url, 'http://x').searchParams.get('name')) + '\n');
}).listen(port, () => console.log(`listening on ${port}`));
