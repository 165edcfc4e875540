/* stb_image and stb_image_write, compiled into libkiln from Debian's libstb-dev headers
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
#define STB_IMAGE_WRITE_IMPLEMENTATION

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
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#pragma GCC visibility pop
