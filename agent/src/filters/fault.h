/*
 * Fault injection (the route's `fault`, an ExtensionRef filter in Gateway API terms): with the
 * configured probabilities, answer the request locally with an error instead of forwarding it
 * (abort), or hold it for a while before the rest of the chain runs (delay). Abort is decided
 * first; a request that is aborted is not also delayed.
 *
 *  - abort: a gRPC request gets a trailers-only response whose grpc-status is abort_grpc_status, or
 *    the status mapped from abort_http_status (rm_grpc_status_from_http_status); any other request
 *    gets abort_http_status, or the status mapped from abort_grpc_status
 *    (rm_http_status_from_grpc_status). Counted in the listener's fault_abort and as the local reply
 *    cause RM_LOCAL_FAULT_ABORT. The request never reaches a backend.
 *  - delay: the chain stops for delay_ms (a timer on the stream's worker wheel) and resumes with the
 *    next filter; request body bytes arriving meanwhile wait in the stream's request pipe, bounded
 *    by flow control. Counted in the listener's fault_delay. A stream aborted or freed during the
 *    delay cancels the timer.
 *
 * Probabilities are in millionths, drawn from rm_worker_random(); 0 disables that half.
 *
 * Thread: the stream's worker. No allocation: the timer lives in the filter's per-stream state.
 */
#ifndef remora__filters_fault_h
#define remora__filters_fault_h

#include "proxy/filter.h"

extern const rm_filter_t rm_fault_filter;

#endif
