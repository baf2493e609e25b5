# Every SPIR-V module the Vulkan backend embeds: "name|source|defines".
set(TERN_SHADER_VARIANTS
  "matmul_f32|matmul.comp|-DW_F32"
)
