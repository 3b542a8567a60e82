// Umbrella header of the CProto module: the C code protoc-c generated from proto/*.proto.
// Do not edit the *.pb-c.* files by hand; run proto/generate.sh (see proto/README.md).
#ifndef CPROTO_H
#define CPROTO_H

#include "trainer_state.pb-c.h"
#include "tensorboard_event.pb-c.h"

#endif
