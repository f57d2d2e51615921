#!/usr/bin/env bash
# Walks through every endpoint with curl against a running broker and prints each command
# with its response: the README's API tour is this script's output.
#   scripts/curl-tour.sh [http://127.0.0.1:9092]
set -euo pipefail
B=${1:-http://127.0.0.1:9092}
show() {
  local shown="\$" arg
  for arg in "$@"; do
    case "$arg" in *[\ \"\&\?]*) shown+=" '$arg'" ;; *) shown+=" $arg" ;; esac
  done
  echo "$shown" | sed "s#$B#localhost:9092#g"
  "$@" -s -w '  [HTTP %{http_code}]\n'
  echo
}
J=(-H 'content-type: application/json')
show curl -X POST "$B/topics" "${J[@]}" -d '{"topic_name": "user_signup"}'
show curl -X POST "$B/topics" "${J[@]}" -d '{"name": "user_signup"}'
show curl "$B/topics"
show curl -X POST "$B/producer/register" "${J[@]}" -d '{"topic": "post_created"}'
show curl -X POST "$B/producer/produce" "${J[@]}" -d '{"topic": "post_created", "producer_id": 1, "message": "INFO: post 17 created"}'
show curl -X POST "$B/producer/produce" "${J[@]}" -d '{"topic": "post_created", "producer_id": 1, "message": "INFO: post 18 created"}'
show curl -X POST "$B/producer/produce" "${J[@]}" -d '{"topic": "user_signup", "producer_id": 1, "message": "x"}'
show curl -X POST "$B/consumer/register" "${J[@]}" -d '{"topic": "post_created"}'
show curl -X POST "$B/consumer/register" "${J[@]}" -d '{"topic": "user_login"}'
show curl "$B/size?topic=post_created&consumer_id=1"
show curl "$B/consumer/consume?topic=post_created&consumer_id=1"
show curl "$B/consumer/consume?topic=post_created&consumer_id=1"
show curl "$B/consumer/consume?topic=post_created&consumer_id=1"
show curl "$B/size?topic=post_created&consumer_id=1"
show curl -X POST "$B/producer/produce_batch" "${J[@]}" -d '{"topic": "post_created", "producer_id": 1, "sequence": 0, "messages": ["a", "b", "c"]}'
show curl -X POST "$B/producer/produce_batch" "${J[@]}" -d '{"topic": "post_created", "producer_id": 1, "sequence": 0, "messages": ["a", "b", "c"]}'
show curl "$B/consumer/fetch?topic=post_created&consumer_id=1&max_messages=2"
show curl -X POST "$B/consumer/commit" "${J[@]}" -d '{"topic": "post_created", "consumer_id": 1, "offset": 4}'
show curl -X POST "$B/consumer/register" "${J[@]}" -d '{"topic": "post_created", "group": "indexer"}'
show curl "$B/consumer/fetch?topic=post_created&consumer_id=2&offset=5&wait_ms=1000"
show curl -X POST "$B/consumer/register" "${J[@]}" -d '{"topic": "post_created", "start": "end"}'
show curl "$B/size?topic=post_created&consumer_id=3"
show curl -X POST "$B/topics" "${J[@]}" -d '{"name": "audit", "retention_ms": 86400000, "retention_bytes": "500000000"}'
show curl -X POST "$B/topics" "${J[@]}" -d '{"name": "audit2", "retention_ms": 0}'
show curl "$B/topics/post_created"
show curl -X PATCH "$B/topics/post_created" "${J[@]}" -d '{"retention_bytes": 1000000}'
show curl -X DELETE "$B/topics/audit"
show curl -X DELETE "$B/topics/audit"
big=$(mktemp)
python3 -c 'import json; print(json.dumps({"topic": "post_created", "producer_id": 1, "message": "x" * 1100000}))' >"$big"
show curl -X POST "$B/producer/produce" "${J[@]}" -d @"$big"
rm -f "$big"
show curl -X POST "$B/producer/produce" "${J[@]}" -d '{"topic": "post_created", "producer_id": "one"}'
show curl -X DELETE "$B/topics"
show curl "$B/healthz"
