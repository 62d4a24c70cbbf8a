package authservice

// The wire types of lk-jwt-service's API.

type openIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int    `json:"expires_in"`
}

type rtcMember struct {
	ID              string `json:"id"`
	ClaimedUserID   string `json:"claimed_user_id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// delayFields are MSC4140 delegated-leave parameters. lk-jwt-service acts on
// them; icebox accepts and ignores them (no homeserver here implements
// MSC4140), checking only that they come together as lk-jwt-service does.
type delayFields struct {
	DelayID       string `json:"delay_id,omitempty"`
	DelayTimeout  int    `json:"delay_timeout,omitempty"`
	DelayCSAPIURL string `json:"delay_cs_api_url,omitempty"`
}

func (d delayFields) validate() error {
	if (d.DelayID != "") != (d.DelayTimeout > 0) {
		return badJSON("The request body is missing `delay_id` or `delay_timeout`")
	}
	return nil
}

// legacySFURequest is POST /sfu/get.
type legacySFURequest struct {
	Room        string      `json:"room"`
	OpenIDToken openIDToken `json:"openid_token"`
	DeviceID    string      `json:"device_id"`
	delayFields
}

func (r *legacySFURequest) validate() error {
	if r.Room == "" {
		return badJSON("Missing room parameter")
	}
	if r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "" {
		return badJSON("Missing OpenID token parameters")
	}
	return r.delayFields.validate()
}

// sfuRequest is POST /get_token (MSC4195).
type sfuRequest struct {
	RoomID      string      `json:"room_id"`
	SlotID      string      `json:"slot_id"`
	OpenIDToken openIDToken `json:"openid_token"`
	Member      rtcMember   `json:"member"`
	delayFields
}

func (r *sfuRequest) validate() error {
	if r.RoomID == "" || r.SlotID == "" {
		return badJSON("The request body is missing `room_id` or `slot_id`")
	}
	if r.Member.ID == "" || r.Member.ClaimedUserID == "" || r.Member.ClaimedDeviceID == "" {
		return badJSON("The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`")
	}
	if r.OpenIDToken.AccessToken == "" || r.OpenIDToken.MatrixServerName == "" {
		return badJSON("The request body `openid_token` is missing a `access_token` or `matrix_server_name`")
	}
	return r.delayFields.validate()
}

type sfuResponse struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}
