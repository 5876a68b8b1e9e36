#!/bin/sh
wget -q -O /dev/null http://127.0.0.1:8080/ && echo ok
