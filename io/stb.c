/* stb_image, compiled into libkiln from Debian's libstb-dev header
 * instead of linking its prebuilt libstb.so: only the formats kiln accepts are compiled
 * (a file that sniffs as JPEG can no longer reach stb's PSD, PNM or TGA parsers), the code
 * is built with kiln's flags (so sanitizer and fuzz builds instrument it), and the symbols
 * stay hidden inside libkiln. kiln checks every file's structure before stb sees it
 * (io/image_format.cpp); see docs/hostile_inputs.md. */
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STB_IMAGE_IMPLEMENTATION

/* The C library headers stb includes come first: declared inside the hidden region below,
 * malloc and memcmp would become hidden undefined symbols that the link cannot resolve. */
#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC visibility push(hidden)

/* A per-thread cap on any one allocation stb makes, set by kiln from the image's declared
 * size before each decode (io/image.cpp). Without it a small PNG whose compressed data
 * inflates far beyond its declared pixels (a "zip bomb") makes stb grow its buffer up to
 * 4 GiB; with it the decode fails with stb's "outofmem", which kiln reports. */
static _Thread_local size_t kiln_stbi_cap = 0; /* 0: no cap */

void kiln_stbi_set_allocation_cap(size_t bytes) { kiln_stbi_cap = bytes; }

static void* kiln_stbi_malloc(size_t n) { return kiln_stbi_cap && n > kiln_stbi_cap ? NULL : malloc(n); }
static void* kiln_stbi_realloc(void* p, size_t n) { return kiln_stbi_cap && n > kiln_stbi_cap ? NULL : realloc(p, n); }
#define STBI_MALLOC(n) kiln_stbi_malloc(n)
#define STBI_REALLOC(p, n) kiln_stbi_realloc(p, n)
#define STBI_FREE(p) free(p)

#include <stb/stb_image.h>
#pragma GCC visibility pop
