/*
 * Header modifiers (the route's `request_headers` / `response_headers`, Gateway API
 * RequestHeaderModifier / ResponseHeaderModifier), applied in the order set, add, remove:
 *  - set: every field of that name is replaced by one field with the configured value (added when
 *    absent);
 *  - add: a field is appended, the ones already there are kept;
 *  - remove: every field of that name is removed.
 * On the request, setting `host` sets the request's authority instead (sent upstream as :authority
 * over HTTP/2 and as Host over HTTP/1.1; the codecs keep no host field in the header list); routing
 * is already done. The response modifiers run on every response head that goes downstream,
 * upstream or local.
 *
 * Names come lower-cased from validation, which also refuses pseudo-header, hop-by-hop and
 * content-length fields. Fields reference the snapshot's strings (the stream holds the snapshot);
 * the header arrays grow in the stream's pool.
 *
 * Thread: the stream's worker.
 */
#ifndef remora__filters_header_rewrite_h
#define remora__filters_header_rewrite_h

#include "proxy/filter.h"

extern const rm_filter_t rm_header_rewrite_filter;

#endif
