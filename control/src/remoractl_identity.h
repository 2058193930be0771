/*
 * remoractl's identity commands (docs/identity.md): `trust-anchor`, `token create`, `identity`.
 *
 * They reach the control plane through `call`, which makes one unary call and returns the response
 * (the caller frees it with protobuf_c_message_free_unpacked) or exits with remoractl's exit codes
 * on failure; `usage_exit` prints help and exits. Main thread of remoractl only.
 */
#ifndef remora_control__remoractl_identity_h
#define remora_control__remoractl_identity_h

#include <protobuf-c/protobuf-c.h>

typedef ProtobufCMessage *(*rm_ctl_call_fn)(const char *method, const ProtobufCMessage *req,
                                            const ProtobufCMessageDescriptor *desc);

extern const char rm_ctl_trust_anchor_help[], rm_ctl_token_help[], rm_ctl_identity_help[];

/** Each returns the exit code; `argv[0]` is the command's name. */
int rm_ctl_trust_anchor(int argc, char **argv, rm_ctl_call_fn call);
int rm_ctl_token(int argc, char **argv, rm_ctl_call_fn call);
int rm_ctl_identity(int argc, char **argv, rm_ctl_call_fn call);

#endif
