/* stb_image_write, compiled into libkiln from Debian's libstb-dev header (see io/stb.c
 * for why not the prebuilt libstb.so): kiln writes PNG, JPEG and BMP files of its own
 * images (the demo dataset, TensorBoard image summaries, tests). Its JPEG bit writer
 * shifts signed ints past their range (undefined in C, harmless on every compiler kiln
 * supports); it only ever sees kiln's own pixels, so sanitizer builds exempt this file
 * from the shift check (CMakeLists.txt) rather than stop on it. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC visibility push(hidden)
#include <stb/stb_image_write.h>
#pragma GCC visibility pop
