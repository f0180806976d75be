"""ID-based sequential recommenders (SASRec, GRU4Rec, FPMC, DuoRec) behind one protocol."""
