'use strict';
const express = require('express');

const app = express();
app.get('/', (req, res) => {
  res.type('text/plain').send(`hello from a Dockerfile, ${req.query.name || 'world'} (express ${require('express/package.json').version})\n`);
});
app.get('/health', (req, res) => res.json({ ok: true }));

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  app.listen(port, () => console.log(`listening on ${port}`));
}
module.exports = app;
