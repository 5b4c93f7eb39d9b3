// DeepSeek-V2's special tokens, as its tokenizer spells them; tokenizers trained here give them ids 0 and 1.
export const BOS = '<｜begin▁of▁sentence｜>';
export const EOS = '<｜end▁of▁sentence｜>';
