package signaling

import "time"

// The state machine: pure functions from a call and an action to the next
// call, or a *TransitionError. They check the call's state and who acts;
// whether the actor belongs to the conversation is checked by the Service.

func transitionErr(c *Call, code, msg string) error {
	return &TransitionError{Code: code, Status: c.Status, Msg: msg}
}

// notEnded refuses any action on a terminal call.
func notEnded(c *Call) error {
	if c.Status.Terminal() {
		return transitionErr(c, "call_ended", "the call has ended")
	}
	return nil
}

// applyAnswer: the first answer wins and is selected at once (the service
// confirms it to the other side with CallSelectAnswer semantics).
func applyAnswer(c *Call, user, partyID, sdp string, now time.Time) error {
	if err := notEnded(c); err != nil {
		return err
	}
	if c.Status == StatusAnswered {
		return transitionErr(c, "already_answered", "another party has answered the call")
	}
	if partyID == c.PartyID {
		return forbiddenf("the caller's own party cannot answer")
	}
	if c.Invitee != "" && user != c.Invitee {
		return forbiddenf("the call invites another user")
	}
	c.Status = StatusAnswered
	c.SDPAnswer = sdp
	c.Answerer = user
	c.AnswerPartyID = partyID
	c.AnsweredAt = &now
	return nil
}

// checkSelectAnswer: only the caller selects, and only the answer already
// chosen (first answer wins).
func checkSelectAnswer(c *Call, user, partyID, selected string) error {
	if err := notEnded(c); err != nil {
		return err
	}
	if user != c.Initiator || partyID != c.PartyID {
		return forbiddenf("only the caller selects an answer")
	}
	if c.Status != StatusAnswered {
		return transitionErr(c, "not_answered", "the call has no answer to select")
	}
	if selected != c.AnswerPartyID {
		return transitionErr(c, "answer_already_selected", "another answer was selected first")
	}
	return nil
}

// checkInCall: candidates, negotiation and hangups come from the caller
// or, once the call is answered, from the chosen answerer only. While it
// rings, the callee may act too (gather candidates, decline by hanging
// up): the invitee if the call names one, else any participant.
func checkInCall(c *Call, user, partyID string) error {
	if err := notEnded(c); err != nil {
		return err
	}
	switch c.Status {
	case StatusAnswered:
		if !isCaller(c, user, partyID) && !isAnswerer(c, user, partyID) {
			return forbiddenf("the call was answered by another party")
		}
	case StatusRinging:
		if user != c.Initiator && c.Invitee != "" && user != c.Invitee {
			return forbiddenf("the call invites another user")
		}
	}
	return nil
}

func checkNegotiate(c *Call, user, partyID string) error {
	if err := checkInCall(c, user, partyID); err != nil {
		return err
	}
	if c.Status != StatusAnswered {
		return transitionErr(c, "not_answered", "renegotiation needs an answered call")
	}
	return nil
}

// Renegotiation (m.call.negotiate) within an answered call, offers and
// answers from either party, and the glare rule of the spec's "perfect
// negotiation": when both parties send an offer at once, the polite party
// yields — it drops its own offer and answers the other's. icebox makes
// the callee (the answering party) polite and the caller impolite, as
// matrix-js-sdk does (its inbound calls are the polite side), so both ends
// of a bridged call agree without a tie-break.
//
// The call keeps the party whose offer waits for an answer (OfferParty,
// until OfferExpires, the negotiate's lifetime: a lost offer does not
// block the call for good):
//
//   - an offer with no other offer pending is relayed, and now pending;
//   - the caller's offer crossing the callee's pending one wins: it is
//     relayed and now pending (the callee rolls back and answers it);
//   - the callee's offer crossing the caller's pending one is refused
//     (negotiation_glare: the callee answers the caller's offer instead);
//   - an offer replacing the same party's pending one is relayed;
//   - an answer is relayed only to the other party's pending offer, and
//     ends it; any other answer is refused (no_offer).

// Negotiate description types.
const (
	DescriptionOffer  = "offer"
	DescriptionAnswer = "answer"
)

func applyNegotiate(c *Call, user, partyID, descType string, lifetime time.Duration, now time.Time) error {
	if err := checkNegotiate(c, user, partyID); err != nil {
		return err
	}
	pending := c.OfferParty
	if c.OfferExpires != nil && !now.Before(*c.OfferExpires) {
		pending = "" // the offer's lifetime passed unanswered
	}
	switch descType {
	case DescriptionOffer:
		if pending != "" && pending != partyID && !isCaller(c, user, partyID) {
			return transitionErr(c, "negotiation_glare",
				"the caller's offer crossed yours; the callee yields: answer the caller's offer")
		}
		until := now.Add(lifetime)
		c.OfferParty, c.OfferExpires = partyID, &until
	case DescriptionAnswer:
		if pending == "" || pending == partyID {
			return transitionErr(c, "no_offer", "there is no offer of the other party to answer")
		}
		c.OfferParty, c.OfferExpires = "", nil
	default:
		return invalidf(`description.type must be "offer" or "answer"`)
	}
	return nil
}

func applyReject(c *Call, user, partyID string, now time.Time, revokeFor time.Duration) error {
	if err := notEnded(c); err != nil {
		return err
	}
	if c.Status != StatusRinging {
		return transitionErr(c, "not_ringing", "only a ringing call can be rejected")
	}
	if isCaller(c, user, partyID) {
		return forbiddenf("the caller hangs up rather than rejects")
	}
	if c.Invitee != "" && user != c.Invitee {
		return forbiddenf("the call invites another user")
	}
	end(c, StatusRejected, ReasonRejected, user, now, revokeFor)
	return nil
}

func applyHangup(c *Call, user, partyID, reason string, now time.Time, revokeFor time.Duration) error {
	if err := checkInCall(c, user, partyID); err != nil {
		return err
	}
	end(c, StatusEnded, reason, user, now, revokeFor)
	return nil
}

// applyExpire ends an unanswered invite whose lifetime has passed. ok is
// false (and c unchanged) if the call is no longer ringing or not due.
func applyExpire(c *Call, now time.Time, revokeFor time.Duration) (ok bool) {
	if c.Status != StatusRinging || now.Before(c.InviteDeadline()) {
		return false
	}
	end(c, StatusExpired, ReasonInviteTimeout, "", now, revokeFor)
	return true
}

// applyRevoke ends a live call by an administrator's decision.
func applyRevoke(c *Call, now time.Time, revokeFor time.Duration) {
	if c.Status.Terminal() {
		return
	}
	end(c, StatusEnded, ReasonRevoked, "", now, revokeFor)
}

func end(c *Call, status Status, reason, by string, now time.Time, revokeFor time.Duration) {
	c.Status = status
	c.EndReason = reason
	c.EndedBy = by
	c.EndedAt = &now
	// A minute past the TTL: a credential minted in the same instant as
	// the end (a request that checked the call just before) expires
	// within the revocation too.
	until := now.Add(revokeFor + time.Minute)
	c.RevokedUntil = &until
}

func isCaller(c *Call, user, partyID string) bool {
	return user == c.Initiator && partyID == c.PartyID
}

func isAnswerer(c *Call, user, partyID string) bool {
	return c.Status == StatusAnswered && user == c.Answerer && partyID == c.AnswerPartyID
}
