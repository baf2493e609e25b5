#!/usr/bin/env python3
"""k_*.cu -> host C++ for the CUDA emulation (emu_device.h): kernel launches become emu_launch
calls of the kernel bound to its arguments' values (emu_bind), dynamic shared memory a pointer to
the emulator's per-block buffer. Usage: translate.py IN OUT"""
import re
import sys

src = open(sys.argv[1]).read()
out = '#include "emu_device.h"\n' + src
out = re.sub(r'extern __shared__ (\w+) (\w+)\[\];', r'\1 *\2 = (\1 *)emu_dyn_smem;', out)
launch = re.compile(r'(\b[\w:]+(?:<[^;<>]*>)?)\s*<<<([^;]*?)>>>\s*\((.*?)\);', re.S)
# the arguments are evaluated and converted to the kernel's parameter types at the launch (as CUDA
# copies them then): a launch captured into a graph runs later, when the caller's locals are gone
out, n = launch.subn(lambda m: 'emu_launch(%s, emu_bind(%s, %s));' % (m.group(2), m.group(1), m.group(3)), out)
if '<<<' in out:
    sys.exit('translate.py: a launch was not rewritten in ' + sys.argv[1])
open(sys.argv[2], 'w').write(out)
