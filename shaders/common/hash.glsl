// The counter-based dropout generator; identical to tern_dropout_hash() in src/backend/backend.h.
uint tern_hash_mix(uint x)
{
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	return x;
}

uint tern_dropout_hash(uint key_lo, uint key_hi, uint i)
{
	uint h = tern_hash_mix(i ^ key_lo);
	return tern_hash_mix(h ^ key_hi ^ 0x9e3779b9u);
}
