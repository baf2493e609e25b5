// Every tern pipeline shares one layout: eight storage buffers (unused ones are bound to a small
// dummy buffer) and up to 128 bytes of push constants. A view's offset inside its binding is
// passed in push constants, in 4-byte words, because bindings start at aligned offsets.
#define TERN_BINDINGS 8
