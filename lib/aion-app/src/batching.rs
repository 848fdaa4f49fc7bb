//! From a chunk's tokens to model batches: rows are grouped by the set of modalities they
//! have (so a row with only photometry costs a few tokens, not the 576 of an absent image),
//! each group is cut into batches of at most `batch` rows, and only the group's modalities are
//! given to the model. Grouping depends only on the chunk's rows. The adaptive chunk size
//! depends on the rank count, so a row's batch neighbours may too; its results do not on the
//! CPU backends, and outputs are identical for any number of ranks (`tests/cli/ranks.rs`).

use std::collections::BTreeMap;

use aion_model::fourm::TokenInput;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::codec_set::ModalityTokens;

/// Rows (chunk-local) that share the same used modalities, at most `batch` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Indices into the chunk's token list of the modalities given to the model.
    pub modalities: Vec<usize>,
    /// Chunk-local rows.
    pub rows: Vec<usize>,
}

/// Groups the `n` rows of a chunk into batches. `inputs[i]` says whether `tokens[i]` may be an
/// input (in the model's `domains_in`, not a prediction target). Rows with no usable input are
/// in no batch.
pub fn batches(tokens: &[ModalityTokens], inputs: &[bool], n: usize, batch: usize) -> Vec<Batch> {
    let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for r in 0..n {
        let sig: Vec<usize> = (0..tokens.len())
            .filter(|&i| inputs[i] && tokens[i].used[r])
            .collect();
        if !sig.is_empty() {
            groups.entry(sig).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (modalities, rows) in groups {
        for part in rows.chunks(batch.max(1)) {
            out.push(Batch {
                modalities: modalities.clone(),
                rows: part.to_vec(),
            });
        }
    }
    out
}

/// The model inputs of one batch.
pub fn inputs<B: Backend>(
    tokens: &[ModalityTokens],
    b: &Batch,
    device: &B::Device,
) -> Vec<TokenInput<B>> {
    b.modalities
        .iter()
        .map(|&i| input_of(&tokens[i], &b.rows, device))
        .collect()
}

/// The model input of one modality's tokens `t` for the chunk-local `rows`.
pub fn input_of<B: Backend>(
    t: &ModalityTokens,
    rows: &[usize],
    device: &B::Device,
) -> TokenInput<B> {
    let k = t.modality.num_tokens();
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|&r| t.tokens[r * k..(r + 1) * k].iter().copied())
        .collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows.len(), k]), device);
    let input = TokenInput::new(&t.modality, ids);
    match &t.token_mask {
        Some(mask) => {
            let m: Vec<bool> = rows
                .iter()
                .flat_map(|&r| mask[r * k..(r + 1) * k].iter().copied())
                .collect();
            input.with_mask(Tensor::<B, 2, Bool>::from_data(
                TensorData::new(m, [rows.len(), k]),
                device,
            ))
        }
        None => input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aion_model::modality::by_token_key;

    fn toks(key: &str, used: &[bool]) -> ModalityTokens {
        let mut t = ModalityTokens::absent(by_token_key(key).unwrap(), used.len());
        t.used = used.to_vec();
        t
    }

    #[test]
    fn groups_by_signature_and_splits_by_batch_size() {
        let t = vec![
            toks("tok_flux_g", &[true, true, false, true, true]),
            toks("tok_z", &[true, false, false, true, true]),
        ];
        let b = batches(&t, &[true, true], 5, 2);
        assert_eq!(
            b,
            vec![
                Batch {
                    modalities: vec![0],
                    rows: vec![1]
                },
                Batch {
                    modalities: vec![0, 1],
                    rows: vec![0, 3]
                },
                Batch {
                    modalities: vec![0, 1],
                    rows: vec![4]
                },
            ]
        );
        // A modality that is not an input (a prediction target) does not split groups.
        let b = batches(&t, &[true, false], 5, 8);
        assert_eq!(
            b,
            vec![Batch {
                modalities: vec![0],
                rows: vec![0, 1, 3, 4]
            }]
        );
    }
}
