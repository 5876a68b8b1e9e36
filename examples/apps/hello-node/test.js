'use strict';
const assert = require('assert');
const { greet } = require('./greet');
assert.strictEqual(greet(), 'hello, world');
assert.strictEqual(greet('buildvm'), 'hello, buildvm');
console.log('2 tests passed');
