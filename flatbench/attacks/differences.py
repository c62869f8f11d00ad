"""What each ported estimator does differently from the public code it follows (docs/methods.md
prints these under each method, from the declarations; the estimators' docstrings say more)."""
from __future__ import annotations

# What GAA's two forms share against gradient/gaa.py.
_GAA = ("The port divides its momentum's input by its L1 norm plus 1e-8; here MI-FGSM's mean|ḡ| (the same direction, "
        "so the same sign step), and the look-ahead by ‖g'‖₁ without the 1e-8.",
        "The port's loss is the batch's mean cross-entropy; here the sum: a constant factor that both L1 "
        "normalisations remove.",
        "Under norm=l2 the port draws a Gaussian scaled to length ξ and moves ρ along g'/‖g'‖₁; here the neighbours are "
        "U(±ξ·ε/√d) per pixel and the look-ahead is an L2 step of ρ, as for every estimator under l2.")

# What AWT's two forms share against model_related/awt.py.
_AWT = ("The port's SAM optimizer keeps its SGD momentum buffer and the weights' last gradient from one batch to the "
        "next, so its images depend on the batches before them; here every call (a batch) starts from the surrogate's "
        "own weights with no buffer, so a batch's examples do not depend on the batches crafted before it.",
        "The port applies its transform to x' and again to the look-ahead point built from the transformed x'; here "
        "each point goes through the transforms once, as PGN's (the same with no transforms, AWT's default).",
        "The port's input-gradient loss is the batch's mean cross-entropy; here the sum (PGN's mean|g| and the sign "
        "step remove the factor). The weight-space loss is the batch's mean, as the port's: SGD's step depends on it.",
        "Under norm=l2 the neighbours are U(±ζ·ε/√d) per pixel and the look-ahead an L2 step of α, as for every "
        "estimator under l2.")

# estimator name -> one line per known difference
DIFFERENCES = {
    "pgn": ("None known against the official code and TransferAttack's gradient/pgn.py: x' is not clipped to [0,1] "
            "there either.",),
    "gnp": ("The authors published no code; this follows the paper's equations (an L2 look-ahead of length r and "
            "the minus sign). TransferAttack's port is gnp_ta.",),
    "gnp_ta": ("TransferAttack's port, not the paper: a mean-|g| look-ahead and (1+β)·g1 + β·g2, which is not the "
               "penalty's gradient (the paper's form is gnp).",),
    "vmi": ("None known against TransferAttack's gradient/vmifgsm.py.",),
    "cwa": ("TransferAttack's outer momentum divides δ' − δ by the L1 norm of the whole batch's update "
            "(torch.norm(fake_grad, p=1)), so an image's step depends on its batch mates; here each image is normalised "
            "by its own (MI-FGSM's mean|g|, the same sign), and one image at a time equals the port.",
            "The port starts from a random δ (random_start=True by default); every flatbench attack starts at δ = 0, "
            "as the port with random_start=False.",
            "The port's beta=50 argument is never read by its forward; there is no such setting here."),
    "emi": ("TransferAttack's EMIFGSM.transform always samples linearly: its sample_method argument and get_factors are "
            "never used. Here sampling=uniform and sampling=gaussian draw the coefficients (keyed by seed and step), as "
            "the paper describes.",
            "The port sums the N points' losses as one mean cross-entropy over N·B images; here each point's gradient is "
            "summed. The two differ by the factor 1/(N·B), which MI-FGSM's normalisation and the sign step remove.",
            "A zero average gradient gives a zero direction here where the port divides 0 by 0 (NaN)."),
    "gaa": ("The aggregation (1−λ)·g' + (1+λ)·ĝ is read from the weights in TransferAttack's comment (\"by Eq. (9)\"); "
            "the paper's Eq. 9 itself could not be checked. TransferAttack's line, with ĝ counted twice, is gaa_ta.",
            *_GAA),
    "gaa_ta": ("TransferAttack's line as it runs: ĝ + (1−λ)·g' + (1+λ)·ĝ. The paper's weights without the extra ĝ are gaa.",
               *_GAA),
    "awt": ("SAM's ascent uses each step's own weight gradient, as SAM is written; the port never zeroes the weights' "
            "gradients after SAM's second step, so its next ascent adds the previous step's (awt_ta).", *_AWT),
    "awt_ta": ("SAM's ascent carries the previous step's weight gradient, as the port's does within a batch (awt "
               "uses each step's own).", *_AWT),
    "fgsra": ("TransferAttack's DCT and inverse DCT run by FFT; here by their matrices (the same linear maps; the "
              "float rounding differs).",
              "The port's loss is the batch's mean cross-entropy; here the sum: every gradient it mixes scales alike, "
              "so the cosines and the sign step are unchanged.",
              "Under norm=l2 the port keeps its per-pixel U(±β·ε); here the neighbours are U(±β·ε/√d), as for every "
              "estimator under l2.",
              "The port's gkern builds a TIM kernel on CUDA that its forward never uses; there is none here."),
    "rap": ("Under norm=l2 TransferAttack's port fails (init_n_rap takes a norm over dim=10 and draws normal_(-ε, ε)); "
            "here the start is U(±ε_n/√d) per pixel, the steps are L2 steps of α_n and the ball is the L2 ball of "
            "radius ε_n.",
            "The authors' script ascends cross-entropy on a label of its own in the inner loop; estimator.inner_loss="
            "official (method=rap_oc, RAP-OC) ascends it on the surrogate's prediction. The released "
            "rap_attack_new.py takes that label from the data set's target column, which is not a setting.",
            "The authors' script also offers data augmentations (num_data_augmentation) and a MaxLogit loss; "
            "neither is implemented."),
    "gra": ("TransferAttack's last_noise.cuda() (a device move) is not reproduced: it changes no number.",
            "A zero gradient norm gives a cosine of 0 here where the port divides 0 by 0 (NaN).",
            "The authors' code labels every gradient by the surrogate's clean prediction; estimator.label_by="
            "clean_prediction (method=gra_oc, GRA-OC) does the same."),
    "mef": ("With an input transform TransferAttack's port differentiates with respect to the transformed point "
            "(a shape error under DIM); here the loss is taken through the transforms and differentiated with respect "
            "to the image, so MEF+DIM+TIM runs.",),
    "anda": ("TransferAttack's port takes one image per batch; here each image of a batch keeps its own statistics "
             "(a batch crafts what one image at a time does).",
             "sample=True (the final image drawn from the learned distribution) is not implemented; the published "
             "rows use sample=False.",
             "MultiANDA, the paper's ensembled variant, is not implemented."),
}
